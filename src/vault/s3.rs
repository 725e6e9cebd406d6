//! Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, …) through
//! `object_store`. Objects are `<prefix>/blobs/<key>.age`; like the local
//! store, only age ciphertext is ever written and names are random.
//!
//! # Sync over async
//! The vault's blob API is synchronous: it runs on blocking threads (and
//! behind the pipelined reader/writer helper threads). `object_store` is
//! async. The store therefore owns a small tokio runtime of its own for its
//! HTTP I/O; a synchronous call hands the future to that runtime and waits
//! on a std channel. A runtime of its own, rather than the application's
//! handle, because waiting on the caller's runtime deadlocks a
//! current-thread runtime and `Handle::block_on` panics when the caller is
//! an async task. This way a call works from any thread; from an async
//! worker it only ties up that worker for the round trip (the vault makes
//! such calls only on rare paths, e.g. deleting a discarded draft's blobs).
//!
//! # Memory
//! Writes are multipart uploads in parts of [`PART_SIZE`] (8 MiB): the part
//! being filled plus at most [`PARTS_IN_FLIGHT`] parts uploading, so a writer
//! holds at most 24 MiB whatever the object's size. An object smaller than
//! one part is sent with a single PUT at commit. Reads stream the GET
//! response and hold one network chunk at a time.
//!
//! # Durability and orphans
//! An object becomes visible only when its upload completes (on commit), so
//! there are no temp files to sweep; an abandoned multipart upload is
//! aborted when its writer is dropped. Uploads orphaned by a crash are not
//! listed here: give the bucket a lifecycle rule that aborts incomplete
//! multipart uploads after a day (README).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use secrecy::{ExposeSecret, SecretString};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use super::blobs::{BlobKey, BlobStore, BlobWriter, StoredEntry};

/// Bytes per multipart part. S3 needs ≥ 5 MiB for every part but the last;
/// 8 MiB keeps requests few (a 1 GiB file is 128 parts, far below the
/// 10 000-part limit, so objects up to 80 GiB fit) and memory small.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading while the next one fills: uploads overlap with
/// encryption without letting a slow store make memory grow.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Folder (key prefix) of the blobs below the configured prefix.
const BLOB_FOLDER: &str = "blobs";
const BLOB_SUFFIX: &str = ".age";
/// A key prefix that never holds objects: listing it is the cheapest
/// request that still proves the bucket exists and the credentials work.
const PROBE_FOLDER: &str = "readiness-probe";
/// A readiness probe must answer quickly even while the client retries.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two reads of a response: a stalled store fails instead of
/// hanging a download. Generous, because it also runs while a part is being
/// sent. There is no overall request timeout: a large download to a slow
/// customer legitimately takes a long time.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP I/O threads of the store's own runtime.
const IO_THREADS: usize = 2;

/// Where and how to reach the bucket.
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
    /// e.g. `http://127.0.0.1:9000` for a local MinIO; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; `None` uses the instance's role (EC2/ECS metadata).
    pub credentials: Option<(String, SecretString)>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A blob store in an S3 bucket.
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    io: Arc<IoRuntime>,
    /// `<prefix>/blobs`
    folder: Path,
    probe: Path,
    /// `s3://bucket/prefix`, for messages.
    name: String,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its configuration holds the credentials.
        f.debug_struct("S3BlobStore")
            .field("location", &self.name)
            .finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// Builds the client. Makes no request: a store that is down at start-up
    /// shows up in readiness checks rather than stopping the process.
    pub fn open(settings: S3Settings) -> io::Result<Self> {
        crate::tls::install_crypto_provider();
        let plain_http = settings
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let options = ClientOptions::new()
            .with_allow_http(plain_http)
            .with_timeout_disabled()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_read_timeout(READ_TIMEOUT);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_client_options(options);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some((key_id, secret)) = &settings.credentials {
            builder = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(secret.expose_secret());
        }
        let store = builder.build().map_err(io::Error::other)?;
        let base: Vec<&str> = settings
            .prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let folder = Path::from_iter(base.iter().copied().chain([BLOB_FOLDER]));
        let probe = Path::from_iter(base.iter().copied().chain([PROBE_FOLDER]));
        let mut name = format!("s3://{}", settings.bucket);
        if !settings.prefix.is_empty() {
            name = format!("{name}/{}", settings.prefix);
        }
        Ok(S3BlobStore {
            store: Arc::new(store),
            io: Arc::new(IoRuntime::new()?),
            folder,
            probe,
            name,
        })
    }

    fn path_of(&self, key: &BlobKey) -> Path {
        self.folder
            .clone()
            .join(format!("{}{BLOB_SUFFIX}", key.as_str()).as_str())
    }

    /// The blob a listed object is, if it is one of ours (directly in the
    /// blob folder, with a name this store could have generated).
    fn key_of(&self, location: &Path) -> Option<BlobKey> {
        let mut rest = location.prefix_match(&self.folder)?;
        let name = rest.next()?;
        if rest.next().is_some() {
            return None;
        }
        name.as_ref()
            .strip_suffix(BLOB_SUFFIX)
            .and_then(BlobKey::parse)
    }
}

impl BlobStore for S3BlobStore {
    fn create(&self) -> io::Result<Box<dyn BlobWriter>> {
        let key = BlobKey::generate();
        Ok(Box::new(S3BlobWriter {
            path: self.path_of(&key),
            key,
            store: Arc::clone(&self.store),
            io: Arc::clone(&self.io),
            part: Vec::new(),
            upload: None,
            in_flight: VecDeque::new(),
        }))
    }

    fn open(&self, key: &BlobKey) -> io::Result<Box<dyn Read + Send>> {
        let store = Arc::clone(&self.store);
        let path = self.path_of(key);
        let result = self.io.run(async move { store.get(&path).await })??;
        Ok(Box::new(S3BlobReader {
            stream: Some(result.into_stream()),
            chunk: Bytes::new(),
            io: Arc::clone(&self.io),
        }))
    }

    fn delete(&self, key: &BlobKey) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let path = self.path_of(key);
        match self.io.run(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> io::Result<Vec<StoredEntry>> {
        let listing = self.store.list(Some(&self.folder));
        let objects = self
            .io
            .run(async move { listing.try_collect::<Vec<_>>().await })??;
        Ok(objects
            .into_iter()
            .filter_map(|meta| {
                self.key_of(&meta.location).map(|key| StoredEntry::Blob {
                    key,
                    modified: SystemTime::from(meta.last_modified),
                })
            })
            .collect())
    }

    fn delete_partial(&self, _name: &str) -> io::Result<()> {
        // `list` never reports partials: an unfinished upload is invisible.
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an S3 blob store has no partial blobs",
        ))
    }

    fn ping(&self) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let probe = self.probe.clone();
        let listed = self.io.run(async move {
            tokio::time::timeout(PING_TIMEOUT, store.list_with_delimiter(Some(&probe))).await
        })?;
        match listed {
            Ok(Ok(_)) => Ok(()),
            // A missing bucket answers a listing with 404.
            Ok(Err(e)) => Err(io::Error::other(format!("{}: {e}", self.name))),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{}: no answer within {PING_TIMEOUT:?}", self.name),
            )),
        }
    }
}

/// The store's own tokio runtime (see the module docs).
struct IoRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl IoRuntime {
    fn new() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("blob-s3-io")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(IoRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `future` on the I/O runtime and waits for it from this thread,
    /// whatever kind of thread it is.
    fn run<F>(&self, future: F) -> io::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the S3 I/O runtime has stopped"))
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; the
        // last owner may well be an async task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A blob being uploaded; see the module docs for its memory bound.
struct S3BlobWriter {
    key: BlobKey,
    path: Path,
    store: Arc<AmazonS3>,
    io: Arc<IoRuntime>,
    /// The part being filled (at most `PART_SIZE`).
    part: Vec<u8>,
    /// Started when the first part is full; `None` again once completed.
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
}

impl S3BlobWriter {
    /// Hands the filled part to the upload, waiting for the oldest part
    /// first when `PARTS_IN_FLIGHT` are already on their way.
    fn send_part(&mut self) -> io::Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let store = Arc::clone(&self.store);
                let path = self.path.clone();
                let upload = self
                    .io
                    .run(async move { store.put_multipart(&path).await })??;
                self.upload.insert(upload)
            }
        };
        let part = std::mem::replace(&mut self.part, Vec::with_capacity(PART_SIZE));
        let upload_part = upload.put_part(PutPayload::from(part));
        self.in_flight.push_back(self.io.handle.spawn(upload_part));
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match self.io.run(task)? {
            Ok(result) => result.map_err(io::Error::from),
            Err(e) => Err(io::Error::other(format!("part upload task failed: {e}"))),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.upload.is_none() {
            // Smaller than one part: a single PUT, nothing to abort on failure.
            let store = Arc::clone(&self.store);
            let path = self.path.clone();
            let payload = PutPayload::from(std::mem::take(&mut self.part));
            self.io
                .run(async move { store.put(&path, payload).await })??;
            return Ok(());
        }
        if !self.part.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        if let Some(mut upload) = self.upload.take() {
            let completed = self.io.run(async move {
                let result = upload.complete().await;
                (upload, result)
            })?;
            if let (upload, Err(e)) = completed {
                // Put it back so that dropping the writer aborts it.
                self.upload = Some(upload);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

impl Write for S3BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.part.capacity() == 0 {
            self.part
                .reserve_exact(PART_SIZE.min(data.len().max(64 * 1024)));
        }
        let n = data.len().min(PART_SIZE - self.part.len());
        self.part.extend_from_slice(&data[..n]);
        if self.part.len() == PART_SIZE {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Durability is `commit`'s job: a part can only be sent once full.
        Ok(())
    }
}

impl BlobWriter for S3BlobWriter {
    fn commit(mut self: Box<Self>) -> io::Result<BlobKey> {
        self.finish()?;
        Ok(self.key.clone())
    }
}

impl Drop for S3BlobWriter {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        // Not committed: stop the parts on their way and abort the upload so
        // the store frees them. Spawned rather than waited for: a drop must
        // not block (it may run on an async task).
        let in_flight = std::mem::take(&mut self.in_flight);
        let key = self.key.clone();
        self.io.handle.spawn(async move {
            for task in in_flight {
                task.abort();
                let _ = task.await;
            }
            if let Err(e) = upload.abort().await {
                tracing::warn!(blob = key.as_str(), error = %e, "could not abort an unfinished S3 upload; a bucket lifecycle rule will");
            }
        });
    }
}

/// A GET response read synchronously, one network chunk at a time.
struct S3BlobReader {
    /// Taken while a chunk is being fetched; `None` at the end.
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    chunk: Bytes,
    io: Arc<IoRuntime>,
}

impl Read for S3BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(mut stream) = self.stream.take() else {
                return Ok(0);
            };
            let (stream, next) = self.io.run(async move {
                let next = stream.next().await;
                (stream, next)
            })?;
            match next {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.stream = Some(stream);
                }
                // A broken download must fail, never look like a short file.
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

impl Drop for S3BlobReader {
    fn drop(&mut self) {
        // A download stopped early closes its connection; let that happen on
        // the runtime that owns the connection, not on whatever thread this is.
        if let Some(stream) = self.stream.take() {
            self.io.handle.spawn(async move { drop(stream) });
        }
    }
}
