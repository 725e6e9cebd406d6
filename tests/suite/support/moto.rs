//! An S3-compatible server for the blob store tests: `moto_server` (PyPI
//! `moto[server]`), started on a free loopback port, or the server named by
//! SEALPOST_TEST_S3_ENDPOINT. Each test uses a bucket of its own, created
//! with a plain (unsigned) PUT, which moto accepts.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngExt;
use sealpost::config::SecretString;
use sealpost::vault::{BlobKey, BlobStore, S3BlobStore, S3Settings};

use crate::support::cluster::free_port;
use crate::support::env::PG_ENV;

const ENDPOINT_ENV: &str = "SEALPOST_TEST_S3_ENDPOINT";
/// The key prefix the tests configure (`s3://bucket/sealpost`).
pub const PREFIX: &str = "sealpost";

/// A moto server this test started (killed on drop), or an external one,
/// with a plain HTTP client to look into it unsigned.
pub struct Moto {
    pub endpoint: String,
    port: u16,
    pub child: Option<Child>,
    log: tempfile::TempDir,
    http: reqwest::Client,
    /// Drives `http` from the test's own (non-async) thread.
    rt: tokio::runtime::Runtime,
}

impl Moto {
    pub fn new(endpoint: String, port: u16) -> Moto {
        sealpost::tls::install_crypto_provider();
        Moto {
            endpoint,
            port,
            child: None,
            log: tempfile::tempdir().expect("temp dir"),
            http: reqwest::Client::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// The server from SEALPOST_TEST_S3_ENDPOINT, or a new one.
    pub fn shared_or_start() -> Moto {
        match std::env::var(ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.is_empty() => {
                Moto::new(endpoint.trim_end_matches('/').to_owned(), 0)
            }
            _ => Moto::start(),
        }
    }

    /// A server of our own, which the test may stop and restart.
    pub fn start() -> Moto {
        let mut moto = Moto::new(String::new(), 0);
        // Another process may take the port between choosing and binding.
        for _ in 0..3 {
            moto.port = free_port();
            moto.endpoint = format!("http://127.0.0.1:{}", moto.port);
            if moto.launch() {
                return moto;
            }
        }
        panic!(
            "moto_server did not start; its log:\n{}",
            std::fs::read_to_string(moto.log.path().join("moto.log")).unwrap_or_default()
        );
    }

    /// Starts `moto_server` on `self.port`; true once it answers.
    pub fn launch(&mut self) -> bool {
        let log = std::fs::File::create(self.log.path().join("moto.log")).expect("moto log");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "moto_server is required for the S3 tests and is not installed: \
                 pip install 'moto[server]==5.2.5' (.ci/run does), \
                 or point SEALPOST_TEST_S3_ENDPOINT at an S3-compatible test server"
            ),
            Err(e) => panic!("cannot run moto_server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && child.try_wait().expect("moto status").is_some()
            {
                self.child = None;
                return false;
            }
            if self
                .try_request(reqwest::Method::GET, "/", Vec::new())
                .is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not answer within 60 s");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (with an empty store: moto keeps
    /// everything in memory).
    pub fn restart(&mut self) {
        assert!(self.launch(), "moto_server did not restart on its port");
    }

    pub fn try_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::Result<(u16, Vec<u8>)> {
        let url = format!("{}{path}", self.endpoint);
        self.rt.block_on(async {
            let resp = self.http.request(method, url).body(body).send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.bytes().await?.to_vec()))
        })
    }

    /// An unsigned request, which moto accepts.
    pub fn request(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.try_request(method.clone(), path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn xml(&self, path: &str) -> String {
        let (status, body) = self.request(reqwest::Method::GET, path, Vec::new());
        assert_eq!(status, 200, "GET {path}");
        String::from_utf8(body).expect("utf-8")
    }

    pub fn new_bucket(&self) -> String {
        let bucket = format!(
            "sealpost-t-{}",
            hex::encode(rand::rng().random::<[u8; 6]>())
        );
        self.create_bucket(&bucket);
        bucket
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, _) = self.request(reqwest::Method::PUT, &format!("/{bucket}"), Vec::new());
        assert_eq!(status, 200, "create bucket {bucket}");
    }

    /// The SEALPOST_* settings for a vault in `bucket`.
    pub fn env_vars(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("SEALPOST_BLOB_URL", format!("s3://{bucket}/{PREFIX}")),
            ("SEALPOST_S3_ENDPOINT", self.endpoint.clone()),
            ("SEALPOST_S3_REGION", "us-east-1".to_owned()),
            ("SEALPOST_S3_ACCESS_KEY_ID", "testing".to_owned()),
            ("SEALPOST_S3_SECRET_ACCESS_KEY", "testing".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn store(&self, bucket: &str) -> S3BlobStore {
        S3BlobStore::open(S3Settings {
            bucket: bucket.to_owned(),
            prefix: PREFIX.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            credentials: Some(("testing".to_owned(), SecretString::from("testing"))),
        })
        .expect("open S3 store")
    }

    /// (key, ETag, size) of every object in the bucket, straight from the
    /// server's listing.
    pub fn objects(&self, bucket: &str) -> Vec<(String, String, u64)> {
        let xml = self.xml(&format!("/{bucket}?list-type=2"));
        assert!(xml.contains("ListBucketResult"), "{xml}");
        assert!(!xml.contains("<IsTruncated>true"), "more than one page");
        elements(&xml, "Contents")
            .into_iter()
            .map(|c| {
                let key = elements(&c, "Key").concat();
                let etag = elements(&c, "ETag").concat();
                let size = elements(&c, "Size").concat().parse().expect("size");
                (key, etag, size)
            })
            .collect()
    }

    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.objects(bucket)
            .into_iter()
            .map(|(k, _, _)| k)
            .collect()
    }

    /// Multipart uploads started but neither completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> usize {
        let xml = self.xml(&format!("/{bucket}?uploads"));
        assert!(xml.contains("ListMultipartUploadsResult"), "{xml}");
        elements(&xml, "Upload").len()
    }

    /// An object's bytes exactly as stored. Read through the store's own
    /// (signed) client: moto refuses anonymous reads of private objects.
    pub fn raw(&self, bucket: &str, key: &str) -> Vec<u8> {
        let name = key
            .strip_prefix(&format!("{PREFIX}/blobs/"))
            .and_then(|k| k.strip_suffix(".age"))
            .and_then(BlobKey::parse)
            .unwrap_or_else(|| panic!("not a blob: {key}"));
        let mut data = Vec::new();
        self.store(bucket)
            .open(&name)
            .expect("open object")
            .read_to_end(&mut data)
            .expect("read object");
        data
    }

    pub fn put_raw(&self, bucket: &str, key: &str, data: &[u8]) {
        let (status, _) = self.request(
            reqwest::Method::PUT,
            &format!("/{bucket}/{key}"),
            data.to_vec(),
        );
        assert_eq!(status, 200, "PUT {key}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The contents of every `<tag>…</tag>` (not nested in itself).
pub fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    out
}

/// A moto server, a bucket on it and the settings that select it.
pub type ClusterBucket = (Moto, String, Vec<(String, String)>);

/// For the multi-instance tests: on PostgreSQL (the scale-out pairing) a
/// bucket on a moto server and the settings that select it; on SQLite
/// nothing (the instances share the local blob folder). Call outside any
/// async runtime: the helper drives its own.
pub fn bucket_when_on_postgres() -> Option<ClusterBucket> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => {
            let moto = Moto::shared_or_start();
            let bucket = moto.new_bucket();
            let vars = moto.env_vars(&bucket);
            Some((moto, bucket, vars))
        }
        _ => None,
    }
}
