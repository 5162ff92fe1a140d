//! The record-batch compression codecs Kafka defines, for the few places that must look inside
//! a batch (compaction, lookup by timestamp, the broker's produce validation).
//!
//! - gzip: a gzip member (RFC 1952).
//! - snappy: either raw snappy or, as the Java client writes it, xerial's framing
//!   (`\x82SNAPPY\0`, two version words, then length-prefixed raw blocks). Both decode; we
//!   encode the xerial form because every client reads it.
//! - lz4: the LZ4 frame format with independent blocks (the Java client's decoder needs them).
//! - zstd: a zstd frame.

use std::io::{self, Read, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The id in the low three bits of a batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// The name used by `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

/// Compresses `data` as a batch payload.
pub fn compress(codec: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::default(),
            );
            enc.write_all(data)?;
            enc.finish()
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = encoder.compress_vec(chunk).map_err(io::Error::other)?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::with_capacity(data.len() / 2))?;
            enc.write_all(data)?;
            let (out, result) = enc.finish();
            result.map(|()| out)
        }
        Compression::Zstd => zstd::bulk::compress(data, 3),
    }
}

/// Decompresses a batch payload, refusing to produce more than `max_len` bytes.
pub fn decompress(codec: Compression, data: &[u8], max_len: usize) -> io::Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(data), max_len),
        Compression::Snappy => decompress_snappy(data, max_len),
        Compression::Lz4 => read_bounded(lz4::Decoder::new(data)?, max_len),
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(data)?, max_len),
    }
}

fn read_bounded(reader: impl Read, max_len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(max_len as u64 + 1).read_to_end(&mut out)?;
    if out.len() > max_len {
        return Err(too_large(max_len));
    }
    Ok(out)
}

fn decompress_snappy(data: &[u8], max_len: usize) -> io::Result<Vec<u8>> {
    let mut decoder = snap::raw::Decoder::new();
    if !data.starts_with(XERIAL_MAGIC) {
        let len = snap::raw::decompress_len(data).map_err(io::Error::other)?;
        if len > max_len {
            return Err(too_large(max_len));
        }
        return decoder.decompress_vec(data).map_err(io::Error::other);
    }
    if data.len() < XERIAL_HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated xerial snappy header",
        ));
    }
    let mut rest = &data[XERIAL_HEADER_LEN..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated xerial snappy block length",
            ));
        }
        let len = i32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        rest = &rest[4..];
        if len < 0 || len as usize > rest.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "xerial snappy block length out of range",
            ));
        }
        let (block, after) = rest.split_at(len as usize);
        let block_len = snap::raw::decompress_len(block).map_err(io::Error::other)?;
        if out.len() + block_len > max_len {
            return Err(too_large(max_len));
        }
        let start = out.len();
        out.resize(start + block_len, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(io::Error::other)?;
        rest = after;
    }
    Ok(out)
}

fn too_large(max_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decompressed payload exceeds {max_len} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in Compression::ALL {
            let packed = compress(codec, &data).unwrap();
            let unpacked = decompress(codec, &packed, data.len()).unwrap();
            assert_eq!(unpacked, data, "{codec:?}");
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 100_000];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = compress(codec, &data).unwrap();
            assert!(decompress(codec, &packed, 50_000).is_err(), "{codec:?}");
        }
    }

    #[test]
    fn raw_snappy_without_xerial_framing_decodes() {
        let data = b"hello hello hello hello".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = [
            0x82u8, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff,
            0xff, 0x7f,
        ];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(codec, &garbage, 1 << 20).is_err(), "{codec:?}");
        }
    }
}
