//! Encoded responses as a list of chunks, so record data for a fetch goes to the socket
//! without being copied into the response buffer first.
//!
//! `kafka-protocol` encodes a `records` field with `put_slice` on the output buffer. A
//! [`SpliceBuf`] is told beforehand which data it may share (the records it is about to
//! encode); when `put_slice` is handed a large slice lying inside one of them, it closes the
//! current chunk and keeps a reference to that slice instead of copying it.
//!
//! Record data still in a segment file is shared the same way through a placeholder: the
//! fetch hands the encoder a slice of an all-zero static region with the range's length,
//! and when that exact slice reaches `put_slice` the buffer puts the file range in its place.
//! The connection then writes memory chunks with vectored writes and file ranges with
//! `sendfile`, so the record bytes are copied once, from the page cache to the socket. A
//! placeholder that is not replaced (copied instead) would send zeros, so `finish` fails
//! then and the connection is closed.

use std::cell::UnsafeCell;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::AsRawFd;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use chorus_storage::FileRange;
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

/// Slices shorter than this are copied: a separate chunk costs more than copying them.
pub(crate) const SPLICE_MIN: usize = 4096;

/// Size of the region placeholders are cut from. A file range longer than this (less the
/// placeholder's index) is read into memory instead.
const PLACEHOLDER_REGION: usize = 16 << 20;

/// The placeholders' zeros. The cell is never written: it is there because a static with
/// interior mutability is placed in `.bss` (address space, no bytes in the binary, no
/// memory until touched), where a plain immutable one went to `.rodata` and made the
/// executable 16 MiB larger.
struct Region(UnsafeCell<[u8; PLACEHOLDER_REGION]>);

// SAFETY: nothing writes through the cell, so shared reads from any thread are sound.
unsafe impl Sync for Region {}

static PLACEHOLDERS: Region = Region(UnsafeCell::new([0; PLACEHOLDER_REGION]));

fn placeholder_region() -> &'static [u8] {
    // SAFETY: the cell is never written (see `Region`), so a shared borrow for the life
    // of the program aliases no mutable access.
    unsafe { &*PLACEHOLDERS.0.get() }
}

/// Iovecs per vectored write.
const MAX_IOV: usize = 64;

/// A placeholder for the `index`th file range of a response, `len` bytes long, if the
/// region is big enough. Placeholders of one response start at different addresses, which
/// is how [`SpliceBuf`] tells them apart.
pub fn placeholder(index: usize, len: usize) -> Option<Bytes> {
    let end = index.checked_add(len)?;
    (end <= PLACEHOLDER_REGION).then(|| Bytes::from_static(&placeholder_region()[index..end]))
}

/// Data a [`SpliceBuf`] may reference instead of copying.
#[derive(Debug, Default)]
pub struct Shareable {
    /// Buffers whose large slices are referenced.
    pub bytes: Vec<Bytes>,
    /// File ranges, each with the placeholder the encoder is given in its place.
    pub files: Vec<(Bytes, FileRange)>,
}

#[derive(Debug)]
enum Chunk {
    Bytes(Bytes),
    /// A file range, of which `sent` bytes are written.
    File {
        range: FileRange,
        sent: u64,
    },
}

impl Chunk {
    fn remaining(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File { range, sent } => (range.len() - sent) as usize,
        }
    }
}

/// An encoded response, size prefix included, ready to write.
#[derive(Debug, Default)]
pub struct Response {
    chunks: Vec<Chunk>,
    /// Chunks before this one are written.
    next: usize,
}

impl Response {
    pub fn len(&self) -> usize {
        self.chunks[self.next..].iter().map(Chunk::remaining).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the whole response: runs of memory chunks with vectored writes, file ranges
    /// with `sendfile`.
    ///
    /// `sendfile` runs on the connection's task: it copies from the page cache, and only a
    /// range that is not cached (an old segment read cold) makes it wait for the disk, as in
    /// Kafka's network threads.
    pub async fn write_to(&mut self, out: &mut OwnedWriteHalf) -> io::Result<()> {
        // Leading empty chunks (an empty response) would be a write of nothing.
        self.advance(0);
        while self.next < self.chunks.len() {
            let written = match &self.chunks[self.next] {
                Chunk::Bytes(_) => {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = self.memory_slices(&mut slices);
                    out.write_vectored(&slices[..n]).await?
                }
                Chunk::File { range, sent } => send_file(out.as_ref(), range, *sent).await?,
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        Ok(())
    }

    /// Fills `dst` with the run of memory chunks from `next`.
    fn memory_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let run = self.chunks[self.next..]
            .iter()
            .map_while(|c| match c {
                Chunk::Bytes(b) => Some(b),
                Chunk::File { .. } => None,
            })
            .filter(|b| !b.is_empty());
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(run) {
            *slot = IoSlice::new(b);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(c) = self.chunks.get_mut(self.next) else {
                return;
            };
            let n = cnt.min(c.remaining());
            match c {
                Chunk::Bytes(b) => b.advance(n),
                Chunk::File { sent, .. } => *sent += n as u64,
            }
            cnt -= n;
            if c.remaining() == 0 {
                self.next += 1;
            }
        }
        // Skip empty chunks so a write never has nothing to write.
        while self
            .chunks
            .get(self.next)
            .is_some_and(|c| c.remaining() == 0)
        {
            self.next += 1;
        }
    }
}

/// One `sendfile` of what is left of `range` to the socket, waiting until it is writable.
async fn send_file(stream: &TcpStream, range: &FileRange, sent: u64) -> io::Result<usize> {
    let left = (range.len() - sent) as usize;
    loop {
        stream.writable().await?;
        let result = stream.try_io(Interest::WRITABLE, || {
            let mut offset = (range.position() + sent) as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call (the stream and
            // the range's file are borrowed), and `offset` is a valid, writable off_t.
            let n = unsafe {
                libc::sendfile(
                    stream.as_raw_fd(),
                    range.file().as_raw_fd(),
                    &mut offset,
                    left,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match result {
            // The file is shorter than the range: it was cut after the fetch looked.
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

impl From<Bytes> for Response {
    fn from(b: Bytes) -> Self {
        Response {
            chunks: vec![Chunk::Bytes(b)],
            next: 0,
        }
    }
}

/// A file range placeholder that never reached `put_slice` whole.
#[derive(Debug, thiserror::Error)]
#[error("a file range of {len} bytes was not placed in the encoded response")]
pub struct Unplaced {
    pub len: usize,
}

/// An encoding buffer that shares, rather than copies, large slices of known data.
///
/// Gaps (`seek`, `range`) may only refer to bytes written after the last shared slice; the
/// message encoders never use them (only record-batch encoding does, into its own buffer).
#[derive(Debug)]
pub struct SpliceBuf {
    shareable: Vec<Bytes>,
    /// File ranges not yet placed, by placeholder.
    files: Vec<(Bytes, Option<FileRange>)>,
    done: Vec<Chunk>,
    /// Length of `done`'s chunks together.
    done_len: usize,
    tail: BytesMut,
}

impl SpliceBuf {
    /// A buffer for `size` bytes of output that may share what `shareable` names; it
    /// reserves room only for the bytes it will copy.
    pub fn new(size: usize, shareable: Shareable) -> Self {
        let shared: usize = shareable
            .bytes
            .iter()
            .map(Bytes::len)
            .filter(|&n| n >= SPLICE_MIN)
            .chain(shareable.files.iter().map(|(p, _)| p.len()))
            .sum();
        let capacity = size.saturating_sub(shared);
        SpliceBuf {
            shareable: shareable.bytes,
            files: shareable
                .files
                .into_iter()
                .map(|(p, range)| (p, Some(range)))
                .collect(),
            done: Vec::new(),
            done_len: 0,
            tail: BytesMut::with_capacity(capacity),
        }
    }

    /// The response, or an error if a file range's placeholder was copied instead of
    /// replaced (the response would carry zeros in its place).
    pub fn finish(mut self) -> Result<Response, Unplaced> {
        if let Some((p, _)) = self.files.iter().find(|(_, range)| range.is_some()) {
            return Err(Unplaced { len: p.len() });
        }
        if !self.tail.is_empty() || self.done.is_empty() {
            self.done.push(Chunk::Bytes(self.tail.freeze()));
        }
        Ok(Response {
            chunks: self.done,
            next: 0,
        })
    }

    /// What to send in place of `slice`: a file range if it is exactly a placeholder, or a
    /// slice of the shareable `Bytes` it lies within.
    fn shared(&mut self, slice: &[u8]) -> Option<Chunk> {
        let (start, end) = (
            slice.as_ptr() as usize,
            slice.as_ptr() as usize + slice.len(),
        );
        if let Some((_, range)) = self.files.iter_mut().find(|(p, range)| {
            range.is_some() && p.as_ptr() as usize == start && p.len() == slice.len()
        }) {
            return range.take().map(|range| Chunk::File { range, sent: 0 });
        }
        self.shareable
            .iter()
            .find(|b| {
                let b_start = b.as_ptr() as usize;
                b_start <= start && end <= b_start + b.len()
            })
            .map(|b| Chunk::Bytes(b.slice_ref(slice)))
    }
}

// SAFETY: every method forwards to the tail `BytesMut`, which upholds `BufMut`'s contract;
// `put_slice` only adds whole chunks in front of it.
unsafe impl BufMut for SpliceBuf {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded with the caller's guarantee that `cnt` bytes were initialised.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SPLICE_MIN {
            if let Some(shared) = self.shared(src) {
                if !self.tail.is_empty() {
                    let copied = self.tail.split().freeze();
                    self.done_len += copied.len();
                    self.done.push(Chunk::Bytes(copied));
                }
                self.done_len += shared.remaining();
                self.done.push(shared);
                return;
            }
        }
        self.tail.extend_from_slice(src);
    }
}

impl ByteBufMut for SpliceBuf {
    fn offset(&self) -> usize {
        self.done_len + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        self.tail.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        &mut self.tail[r.start - self.done_len..r.end - self.done_len]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chorus_storage::batch::BatchBuilder;
    use chorus_storage::{Log, LogOptions, ReadLimits, Records};
    use tokio::io::AsyncReadExt;

    use super::*;

    /// What a peer receives when `r` is written to a real loopback socket.
    async fn sent(mut r: Response) -> Vec<u8> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            out
        });
        let (_read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
        r.write_to(&mut write).await.unwrap();
        assert!(r.is_empty());
        write.shutdown().await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("reader finishes")
            .unwrap()
    }

    /// A log holding four batches of about 900 KiB, and them as a file range plus their bytes.
    fn file_range(dir: &std::path::Path) -> (Log, FileRange, Vec<u8>) {
        let log = Log::open(dir, LogOptions::default()).unwrap();
        for n in 0..4u32 {
            let mut b = BatchBuilder::new();
            for i in 0..28u32 {
                let value: Vec<u8> = (0..32 << 10).map(|j| (n + i * 7 + j) as u8).collect();
                b = b.record(None, Some(&value), 1_000);
            }
            log.append(&mut b.build().unwrap()).unwrap();
        }
        let bytes = log.read(0, ReadLimits::bytes(8 << 20)).unwrap().bytes;
        let range = match log
            .read_records(0, ReadLimits::bytes(8 << 20), 0)
            .unwrap()
            .records
        {
            Records::File(range) => range,
            Records::Bytes(_) => panic!("expected a file range"),
        };
        (log, range, bytes)
    }

    #[tokio::test]
    async fn large_slices_of_shareable_bytes_are_shared_and_the_bytes_come_out_in_order() {
        let records = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let other = vec![9u8; 10_000];
        let shareable = Shareable {
            bytes: vec![records.clone()],
            files: Vec::new(),
        };
        let mut buf = SpliceBuf::new(4 + 12_000 + 1 + 10_000 + 10, shareable);
        buf.put_i32(7);
        buf.put_slice(&records[100..12_100]); // shared
        buf.put_u8(1);
        buf.put_slice(&other); // not shareable: copied
        buf.put_slice(&records[0..10]); // too small: copied
        assert_eq!(buf.offset(), 4 + 12_000 + 1 + 10_000 + 10);
        let r = buf.finish().unwrap();
        assert_eq!(r.chunks.len(), 3, "copied, shared, copied");
        assert!(matches!(&r.chunks[1], Chunk::Bytes(b) if b.as_ptr() == records[100..].as_ptr()));
        let mut expected = 7i32.to_be_bytes().to_vec();
        expected.extend_from_slice(&records[100..12_100]);
        expected.push(1);
        expected.extend_from_slice(&other);
        expected.extend_from_slice(&records[0..10]);
        assert_eq!(r.len(), expected.len());
        assert_eq!(sent(r).await, expected);
    }

    #[tokio::test]
    async fn a_buffer_without_shared_slices_is_one_chunk() {
        let mut buf = SpliceBuf::new(8, Shareable::default());
        buf.put_slice(&[1, 2, 3]);
        buf.seek(5);
        buf.range(3..5).copy_from_slice(&[4, 5]);
        let r = buf.finish().unwrap();
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(sent(r).await, [1, 2, 3, 4, 5]);
        let empty = SpliceBuf::new(0, Shareable::default()).finish().unwrap();
        assert!(empty.is_empty());
        assert!(sent(empty).await.is_empty());
    }

    #[tokio::test]
    async fn a_file_range_replaces_its_placeholder_and_is_sent_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, range, bytes) = file_range(dir.path());
        let len = range.len() as usize;
        assert_eq!(len, bytes.len());
        let p = placeholder(0, len).unwrap();
        let shareable = Shareable {
            bytes: Vec::new(),
            files: vec![(p.clone(), range)],
        };
        let mut buf = SpliceBuf::new(4 + len + 2, shareable);
        buf.put_i32(len as i32);
        buf.put_slice(&p);
        buf.put_slice(&[0xAB, 0xCD]);
        let r = buf.finish().unwrap();
        assert!(matches!(r.chunks[1], Chunk::File { .. }));
        let mut expected = (len as i32).to_be_bytes().to_vec();
        expected.extend_from_slice(&bytes);
        expected.extend_from_slice(&[0xAB, 0xCD]);
        // 3.5 MiB is more than a loopback socket takes at once: sendfile is resumed.
        assert_eq!(sent(r).await, expected);
    }

    #[tokio::test]
    async fn a_placeholder_that_was_copied_fails_the_response_instead_of_sending_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, range, _) = file_range(dir.path());
        let p = placeholder(3, range.len() as usize).unwrap();
        let shareable = Shareable {
            bytes: Vec::new(),
            files: vec![(p.clone(), range)],
        };
        let mut buf = SpliceBuf::new(p.len(), shareable);
        // In two pieces: neither is the placeholder, so both are copied.
        let half = p.len() / 2;
        buf.put_slice(&p[..half]);
        buf.put_slice(&p[half..]);
        assert!(buf.finish().is_err());
        assert!(
            placeholder(1, PLACEHOLDER_REGION).is_none(),
            "too long for the region"
        );
    }
}
