//! Encoded responses as a list of byte chunks, so record data read for a fetch goes to the
//! socket without being copied into the response buffer first.
//!
//! `kafka-protocol` encodes a `records` field with `put_slice` on the output buffer. A
//! [`SpliceBuf`] is told beforehand which `Bytes` may be shared (the records it is about to
//! encode); when `put_slice` is handed a large slice lying inside one of them, it closes the
//! current chunk and keeps a reference to that slice instead of copying it. The connection
//! writes the chunks with one vectored write. For a fetch of 1 MiB from each of 8 partitions
//! this removes an 8 MiB copy (and the page faults of a fresh 8 MiB buffer) per response.

use std::io::IoSlice;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a separate chunk costs more than copying them.
const SPLICE_MIN: usize = 4096;

/// An encoded response, size prefix included, ready to write.
#[derive(Debug, Default)]
pub struct Response {
    chunks: Vec<Bytes>,
    /// Chunks before this one are written.
    next: usize,
}

impl Response {
    pub fn len(&self) -> usize {
        self.remaining()
    }

    pub fn is_empty(&self) -> bool {
        !self.has_remaining()
    }

    /// The whole response in one buffer.
    #[cfg(test)]
    fn to_bytes(&self) -> Bytes {
        match &self.chunks[self.next..] {
            [one] => one.clone(),
            many => {
                let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                for c in many {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        }
    }
}

impl From<Bytes> for Response {
    fn from(b: Bytes) -> Self {
        Response {
            chunks: vec![b],
            next: 0,
        }
    }
}

impl Buf for Response {
    fn remaining(&self) -> usize {
        self.chunks[self.next..].iter().map(Bytes::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.get(self.next).map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(c) = self.chunks.get_mut(self.next) else {
                return;
            };
            let n = cnt.min(c.len());
            c.advance(n);
            cnt -= n;
            if c.is_empty() {
                self.next += 1;
            }
        }
        // Skip empty chunks so `chunk` is only empty at the end.
        while self.chunks.get(self.next).is_some_and(Bytes::is_empty) {
            self.next += 1;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, c) in dst
            .iter_mut()
            .zip(self.chunks[self.next..].iter().filter(|c| !c.is_empty()))
        {
            *slot = IoSlice::new(c);
            n += 1;
        }
        n
    }
}

/// An encoding buffer that shares, rather than copies, large slices of known `Bytes`.
///
/// Gaps (`seek`, `range`) may only refer to bytes written after the last shared slice; the
/// message encoders never use them (only record-batch encoding does, into its own buffer).
#[derive(Debug)]
pub struct SpliceBuf {
    shareable: Vec<Bytes>,
    done: Vec<Bytes>,
    /// Length of `done`'s chunks together.
    done_len: usize,
    tail: BytesMut,
}

impl SpliceBuf {
    /// A buffer for `size` bytes of output that may share slices of `shareable`; it
    /// reserves room only for the bytes it will copy.
    pub fn new(size: usize, shareable: Vec<Bytes>) -> Self {
        let shared: usize = shareable
            .iter()
            .map(Bytes::len)
            .filter(|&n| n >= SPLICE_MIN)
            .sum();
        let capacity = size.saturating_sub(shared);
        SpliceBuf {
            shareable,
            done: Vec::new(),
            done_len: 0,
            tail: BytesMut::with_capacity(capacity),
        }
    }

    pub fn finish(mut self) -> Response {
        if !self.tail.is_empty() || self.done.is_empty() {
            self.done.push(self.tail.freeze());
        }
        Response {
            chunks: self.done,
            next: 0,
        }
    }

    /// The shareable `Bytes` that `slice` lies within, as a slice of it.
    fn shared(&self, slice: &[u8]) -> Option<Bytes> {
        let (start, end) = (
            slice.as_ptr() as usize,
            slice.as_ptr() as usize + slice.len(),
        );
        self.shareable
            .iter()
            .find(|b| {
                let b_start = b.as_ptr() as usize;
                b_start <= start && end <= b_start + b.len()
            })
            .map(|b| b.slice_ref(slice))
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
                    self.done.push(copied);
                }
                self.done_len += shared.len();
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
    use super::*;

    fn written(mut r: Response) -> Vec<u8> {
        let mut out = Vec::new();
        while r.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 3];
            let n = r.chunks_vectored(&mut slices);
            // Write at most 5000 bytes at a time, as a short socket write would.
            let mut budget = 5000usize;
            let mut took = 0;
            for s in &slices[..n] {
                let k = s.len().min(budget);
                out.extend_from_slice(&s[..k]);
                took += k;
                budget -= k;
            }
            r.advance(took);
        }
        out
    }

    #[test]
    fn large_slices_of_shareable_bytes_are_shared_and_the_bytes_come_out_in_order() {
        let records = Bytes::from((0..20_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let other = vec![9u8; 10_000];
        let mut buf = SpliceBuf::new(4 + 12_000 + 1 + 10_000 + 10, vec![records.clone()]);
        buf.put_i32(7);
        buf.put_slice(&records[100..12_100]); // shared
        buf.put_u8(1);
        buf.put_slice(&other); // not shareable: copied
        buf.put_slice(&records[0..10]); // too small: copied
        assert_eq!(buf.offset(), 4 + 12_000 + 1 + 10_000 + 10);
        let r = buf.finish();
        assert_eq!(r.chunks.len(), 3, "copied, shared, copied");
        assert_eq!(r.chunks[1].as_ptr(), records[100..].as_ptr());
        let mut expected = 7i32.to_be_bytes().to_vec();
        expected.extend_from_slice(&records[100..12_100]);
        expected.push(1);
        expected.extend_from_slice(&other);
        expected.extend_from_slice(&records[0..10]);
        assert_eq!(r.to_bytes(), expected);
        assert_eq!(written(r), expected);
    }

    #[test]
    fn a_buffer_without_shared_slices_is_one_chunk() {
        let mut buf = SpliceBuf::new(8, Vec::new());
        buf.put_slice(&[1, 2, 3]);
        buf.seek(5);
        buf.range(3..5).copy_from_slice(&[4, 5]);
        let r = buf.finish();
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.to_bytes(), Bytes::from_static(&[1, 2, 3, 4, 5]));
        assert!(!SpliceBuf::new(0, Vec::new()).finish().has_remaining());
    }
}
