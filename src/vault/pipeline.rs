//! Overlaps I/O with encryption: a helper thread writes (or reads ahead)
//! while the caller's thread runs the cipher, so a seal or open costs about
//! max(crypto, I/O) instead of their sum. The vault uses them for blob I/O;
//! callers with an owned file or socket can use them for their side too.
//! At most `DEPTH` blocks of `BLOCK` bytes are in flight, so memory stays flat.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Bytes per block handed between threads.
const BLOCK: usize = 1024 * 1024;
/// Blocks in flight between the two threads.
const DEPTH: usize = 4;
/// Bytes per write(2) on the writer thread.
const WRITE_PIECE: usize = 64 * 1024;

/// A writer whose writes reach `W` on a helper thread. Call
/// [`PipelinedWriter::finish`] to flush and get `W` back (and any error);
/// dropping it instead stops the helper and drops `W` unflushed.
///
/// The helper starts with the first full block: a part smaller than one
/// block (most message texts) is written on the caller's thread at
/// `finish`, without a thread or a 1 MiB buffer of its own (measured: a
/// thread spawn per small message was a sizeable share of an API send).
pub struct PipelinedWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    state: State<W>,
}

enum State<W: Write + Send + 'static> {
    /// No block filled yet: `W` is still here.
    Direct(Option<W>),
    Helper {
        tx: Option<SyncSender<Vec<u8>>>,
        /// Written blocks coming back for reuse (no allocation per block).
        spare: Receiver<Vec<u8>>,
        worker: Option<JoinHandle<io::Result<W>>>,
    },
}

impl<W: Write + Send + 'static> PipelinedWriter<W> {
    pub fn new(inner: W) -> io::Result<Self> {
        Ok(PipelinedWriter {
            buf: Vec::new(),
            state: State::Direct(Some(inner)),
        })
    }

    fn start_helper(mut inner: W) -> io::Result<State<W>> {
        let (tx, rx): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) = sync_channel(DEPTH);
        let (spare_tx, spare) = sync_channel(DEPTH + 1);
        let worker = std::thread::Builder::new()
            .name("vault-writer".into())
            .spawn(move || {
                for mut block in rx {
                    write_pieces(&mut inner, &block)?;
                    block.clear();
                    let _ = spare_tx.try_send(block);
                }
                inner.flush()?;
                Ok(inner)
            })?;
        Ok(State::Helper {
            tx: Some(tx),
            spare,
            worker: Some(worker),
        })
    }

    fn send_block(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let State::Direct(inner) = &mut self.state {
            let inner = inner.take().ok_or_else(stopped)?;
            self.state = Self::start_helper(inner)?;
        }
        let State::Helper { tx, spare, .. } = &self.state else {
            return Err(stopped());
        };
        let next = spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BLOCK));
        let block = std::mem::replace(&mut self.buf, next);
        let sent = tx.as_ref().map(|tx| tx.send(block).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            // The helper stopped: its error explains why.
            Err(self.join().err().unwrap_or_else(stopped))
        }
    }

    fn join(&mut self) -> io::Result<W> {
        match &mut self.state {
            State::Direct(inner) => inner.take().ok_or_else(stopped),
            State::Helper { tx, worker, .. } => {
                *tx = None;
                match worker.take() {
                    Some(worker) => worker.join().map_err(|_| stopped())?,
                    None => Err(stopped()),
                }
            }
        }
    }

    /// Flushes everything to `W` and hands it back.
    pub fn finish(mut self) -> io::Result<W> {
        if let State::Direct(inner) = &mut self.state {
            let mut inner = inner.take().ok_or_else(stopped)?;
            write_pieces(&mut inner, &self.buf)?;
            inner.flush()?;
            return Ok(inner);
        }
        self.send_block()?;
        self.join()
    }
}

/// 1 MiB writes make the kernel allocate large page-cache folios, measured
/// here at a quarter of the speed of 64 KiB writes (the size age itself
/// writes).
fn write_pieces<W: Write>(inner: &mut W, block: &[u8]) -> io::Result<()> {
    for piece in block.chunks(WRITE_PIECE) {
        inner.write_all(piece)?;
    }
    Ok(())
}

fn stopped() -> io::Error {
    io::Error::other("storage I/O thread stopped")
}

impl<W: Write + Send + 'static> Write for PipelinedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Durability is `finish`'s job; a flush here would only add a round trip.
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for PipelinedWriter<W> {
    fn drop(&mut self) {
        // Stop the helper and let it drop `W` (an uncommitted blob deletes itself).
        if let State::Helper { tx, worker, .. } = &mut self.state {
            *tx = None;
            if let Some(worker) = worker.take() {
                let _ = worker.join();
            }
        }
    }
}

/// A reader fed by a helper thread that reads ahead from `R`.
pub struct PipelinedReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    /// Consumed blocks going back to the helper for reuse.
    spare: SyncSender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    done: bool,
}

impl PipelinedReader {
    pub fn new<R: Read + Send + 'static>(mut inner: R) -> io::Result<Self> {
        let (tx, rx) = sync_channel(DEPTH);
        let (spare, spare_rx) = sync_channel::<Vec<u8>>(DEPTH + 1);
        std::thread::Builder::new()
            .name("vault-reader".into())
            .spawn(move || {
                loop {
                    let mut block = spare_rx.try_recv().unwrap_or_default();
                    block.resize(BLOCK, 0);
                    let mut filled = 0;
                    let result = loop {
                        match inner.read(&mut block[filled..]) {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                filled += n;
                                if filled == BLOCK {
                                    break Ok(());
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => break Err(e),
                        }
                    };
                    let eof = filled < BLOCK;
                    block.truncate(filled);
                    let message = match result {
                        Ok(()) => Ok(block),
                        Err(e) => Err(e),
                    };
                    let failed = message.is_err();
                    // A closed channel means the consumer is gone: stop reading.
                    if tx.send(message).is_err() || failed || eof {
                        return;
                    }
                }
            })?;
        Ok(PipelinedReader {
            rx,
            spare,
            block: Vec::new(),
            pos: 0,
            done: false,
        })
    }
}

impl BufRead for PipelinedReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.block.len() && !self.done {
            match self.rx.recv() {
                Ok(Ok(block)) => {
                    self.done = block.len() < BLOCK;
                    let used = std::mem::replace(&mut self.block, block);
                    if used.len() == BLOCK {
                        let _ = self.spare.try_send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(&self.block[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.block.len());
    }
}

impl Read for PipelinedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_move_every_byte_in_order() -> io::Result<()> {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = PipelinedWriter::new(Vec::new())?;
            for piece in data.chunks(65_552) {
                w.write_all(piece)?;
            }
            let written = w.finish()?;
            assert_eq!(written, data);
            let mut back = Vec::new();
            PipelinedReader::new(io::Cursor::new(written))?.read_to_end(&mut back)?;
            assert_eq!(back, data);
        }
        Ok(())
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("bad sector"))
        }
    }

    #[test]
    fn errors_reach_the_caller() -> io::Result<()> {
        let mut w = PipelinedWriter::new(Failing)?;
        let mut result = Ok(());
        for _ in 0..(DEPTH + 3) {
            result = result.and_then(|()| w.write_all(&vec![0u8; BLOCK]));
        }
        let err = result.and_then(|()| w.finish().map(|_| ()));
        assert_eq!(err.map_err(|e| e.to_string()), Err("disk full".to_owned()));
        // Less than a block is written at `finish`, on the caller's thread.
        let mut small = PipelinedWriter::new(Failing)?;
        small.write_all(b"short")?;
        let err = small.finish().map(|_| ());
        assert_eq!(err.map_err(|e| e.to_string()), Err("disk full".to_owned()));
        let mut r = PipelinedReader::new(Failing)?;
        let mut sink = Vec::new();
        assert!(r.read_to_end(&mut sink).is_err());
        Ok(())
    }
}
