//! Records inside a v2 batch: zigzag varints, decode and encode.
//!
//! ```text
//! length          varint   bytes after this field
//! attributes      i8       unused, 0
//! timestamp_delta varlong  relative to the batch's base timestamp
//! offset_delta    varint   relative to the batch's base offset
//! key_length      varint   -1 for a null key
//! key
//! value_length    varint   -1 for a null value (a tombstone)
//! value
//! header_count    varint
//!   key_length varint, key (UTF-8), value_length varint (-1 null), value
//! ```

/// A record decoded from a buffer; keys, values and headers borrow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The headers exactly as encoded (count first), so a rewrite can copy them unchanged.
    pub headers_raw: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated record")]
    Truncated,
    #[error("varint longer than its type allows")]
    VarintOverflow,
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("record length {declared} does not match its fields ({used} bytes)")]
    LengthMismatch { declared: usize, used: usize },
}

impl<'a> Record<'a> {
    /// Decodes one record at the start of `buf`, returning it and the bytes after it.
    pub fn decode(buf: &'a [u8]) -> Result<(Record<'a>, &'a [u8]), RecordError> {
        let (length, rest) = read_varint(buf)?;
        if length < 0 {
            return Err(RecordError::NegativeLength(length));
        }
        let length = length as usize;
        if rest.len() < length {
            return Err(RecordError::Truncated);
        }
        let (body, after) = rest.split_at(length);

        let (&attributes, r) = body.split_first().ok_or(RecordError::Truncated)?;
        let (timestamp_delta, r) = read_varlong(r)?;
        let (offset_delta, r) = read_varint(r)?;
        let (key, r) = read_nullable_bytes(r)?;
        let (value, r) = read_nullable_bytes(r)?;
        let headers_raw = r;
        // Walk the headers so a malformed one is caught here rather than by a consumer.
        let (count, mut h) = read_varint(r)?;
        if count < 0 {
            return Err(RecordError::NegativeLength(count));
        }
        for _ in 0..count {
            let (k, rest) = read_nullable_bytes(h)?;
            if k.is_none() {
                return Err(RecordError::NegativeLength(-1));
            }
            let (_, rest) = read_nullable_bytes(rest)?;
            h = rest;
        }
        if !h.is_empty() {
            return Err(RecordError::LengthMismatch {
                declared: length,
                used: length - h.len(),
            });
        }
        let offset_delta = i32::try_from(offset_delta).map_err(|_| RecordError::VarintOverflow)?;
        Ok((
            Record {
                attributes: attributes as i8,
                timestamp_delta,
                offset_delta,
                key,
                value,
                headers_raw,
            },
            after,
        ))
    }
}

/// Appends one encoded record to `out`. `headers_raw` is the encoded header block (count
/// first); an empty slice means no headers.
pub fn encode(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers_raw: &[u8],
) {
    // The length prefix comes first, so size the body before writing it in place.
    let nullable_len =
        |b: Option<&[u8]>| b.map_or(varlong_len(-1), |b| varlong_len(b.len() as i64) + b.len());
    let body_len = 1
        + varlong_len(timestamp_delta)
        + varlong_len(offset_delta as i64)
        + nullable_len(key)
        + nullable_len(value)
        + if headers_raw.is_empty() {
            varlong_len(0)
        } else {
            headers_raw.len()
        };
    out.reserve(varlong_len(body_len as i64) + body_len);
    write_varlong(out, body_len as i64);
    out.push(0); // attributes
    write_varlong(out, timestamp_delta);
    write_varlong(out, offset_delta as i64);
    write_nullable_bytes(out, key);
    write_nullable_bytes(out, value);
    if headers_raw.is_empty() {
        write_varlong(out, 0);
    } else {
        out.extend_from_slice(headers_raw);
    }
}

/// Encodes a header block for [`encode`].
pub fn encode_headers(headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_headers_into(&mut out, headers.iter().map(|(k, v)| (k.as_bytes(), *v)));
    out
}

/// Appends the header block of `headers` (key, value) to `out`.
pub fn encode_headers_into<'h>(
    out: &mut Vec<u8>,
    headers: impl ExactSizeIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
) {
    write_varlong(out, headers.len() as i64);
    for (k, v) in headers {
        write_nullable_bytes(out, Some(k));
        write_nullable_bytes(out, v);
    }
}

/// A header as decoded: its key and its value (`None` for a null value).
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// Decodes a header block produced by [`encode_headers`] (or by any Kafka client).
pub fn decode_headers(raw: &[u8]) -> Result<Vec<HeaderRef<'_>>, RecordError> {
    let block = Headers::new(raw)?;
    let mut out = Vec::with_capacity(block.capacity_hint());
    for h in block {
        out.push(h?);
    }
    Ok(out)
}

/// The headers of a header block, decoded one by one (for a caller that builds its own
/// list: no list in between).
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    raw: &'a [u8],
    left: i64,
}

impl<'a> Headers<'a> {
    pub fn new(raw: &'a [u8]) -> Result<Headers<'a>, RecordError> {
        let (count, raw) = read_varint(raw)?;
        Ok(Headers {
            raw,
            left: count.max(0),
        })
    }

    /// How many headers the block says it has (at most 64 of them: the block is not
    /// trusted with a bigger allocation).
    pub fn capacity_hint(&self) -> usize {
        self.left.clamp(0, 64) as usize
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<HeaderRef<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let decoded = read_nullable_bytes(self.raw).and_then(|(k, rest)| {
            let (v, rest) = read_nullable_bytes(rest)?;
            Ok(((k.unwrap_or_default(), v), rest))
        });
        match decoded {
            Ok((header, rest)) => {
                self.raw = rest;
                Some(Ok(header))
            }
            Err(e) => {
                // One error ends the block: what follows cannot be found.
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

fn read_nullable_bytes(buf: &[u8]) -> Result<(Option<&[u8]>, &[u8]), RecordError> {
    let (len, rest) = read_varint(buf)?;
    if len < 0 {
        return Ok((None, rest));
    }
    let len = len as usize;
    if rest.len() < len {
        return Err(RecordError::Truncated);
    }
    let (bytes, rest) = rest.split_at(len);
    Ok((Some(bytes), rest))
}

fn write_nullable_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varlong(out, -1),
        Some(b) => {
            write_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// A zigzag varint that must fit in 32 bits.
fn read_varint(buf: &[u8]) -> Result<(i64, &[u8]), RecordError> {
    let (v, rest) = read_unsigned(buf, 5)?;
    let v = v as u32;
    Ok((((v >> 1) as i32 ^ -((v & 1) as i32)) as i64, rest))
}

fn read_varlong(buf: &[u8]) -> Result<(i64, &[u8]), RecordError> {
    let (v, rest) = read_unsigned(buf, 10)?;
    Ok(((v >> 1) as i64 ^ -((v & 1) as i64), rest))
}

fn read_unsigned(buf: &[u8], max_bytes: usize) -> Result<(u64, &[u8]), RecordError> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate() {
        if i >= max_bytes {
            return Err(RecordError::VarintOverflow);
        }
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, &buf[i + 1..]));
        }
    }
    if buf.len() >= max_bytes {
        Err(RecordError::VarintOverflow)
    } else {
        Err(RecordError::Truncated)
    }
}

/// Bytes [`write_varlong`] writes for `v`.
fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

fn write_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_len_matches_what_is_written() {
        for v in [
            0,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            assert_eq!(varlong_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            i32::MAX as i64,
            i32::MIN as i64,
        ] {
            let mut buf = Vec::new();
            write_varlong(&mut buf, v);
            assert_eq!(read_varint(&buf).unwrap().0, v, "{v}");
        }
        for v in [i64::MAX, i64::MIN, 1 << 40] {
            let mut buf = Vec::new();
            write_varlong(&mut buf, v);
            assert_eq!(read_varlong(&buf).unwrap().0, v);
        }
    }

    #[test]
    fn overlong_and_truncated_varints_are_errors() {
        assert_eq!(read_varint(&[0x80; 6]), Err(RecordError::VarintOverflow));
        assert_eq!(read_varint(&[0x80, 0x80]), Err(RecordError::Truncated));
        assert_eq!(read_varint(&[]), Err(RecordError::Truncated));
    }

    #[test]
    fn record_with_headers_round_trips() {
        let headers = encode_headers(&[("trace", Some(b"abc")), ("empty", None)]);
        let mut buf = Vec::new();
        encode(&mut buf, -5, 3, Some(b"key"), None, &headers);
        let (r, rest) = Record::decode(&buf).unwrap();
        assert!(rest.is_empty());
        assert_eq!(r.timestamp_delta, -5);
        assert_eq!(r.offset_delta, 3);
        assert_eq!(r.key, Some(&b"key"[..]));
        assert_eq!(r.value, None);
        let h = decode_headers(r.headers_raw).unwrap();
        assert_eq!(
            h,
            vec![(&b"trace"[..], Some(&b"abc"[..])), (&b"empty"[..], None)]
        );
    }

    #[test]
    fn a_truncated_header_block_is_an_error_and_ends_there() {
        let block = encode_headers(&[("trace", Some(b"abc")), ("next", Some(b"v"))]);
        // Cut inside the second header's value.
        let cut = &block[..block.len() - 1];
        assert_eq!(decode_headers(cut), Err(RecordError::Truncated));
        let mut headers = Headers::new(cut).unwrap();
        assert_eq!(headers.next(), Some(Ok((&b"trace"[..], Some(&b"abc"[..])))));
        assert_eq!(headers.next(), Some(Err(RecordError::Truncated)));
        assert_eq!(headers.next(), None, "nothing is read past the error");
        // A count that claims more headers than the block has.
        let mut lying = block.clone();
        lying[0] = 6; // zigzag varint 3
        assert_eq!(decode_headers(&lying), Err(RecordError::Truncated));
        // A negative count is no headers; an empty block is an error.
        assert_eq!(decode_headers(&[1]), Ok(Vec::new()));
        assert_eq!(decode_headers(&[]), Err(RecordError::Truncated));
        // A huge count does not size an allocation.
        assert_eq!(
            Headers::new(&[0xfe, 0xff, 0xff, 0xff, 0x0f])
                .unwrap()
                .capacity_hint(),
            64
        );
    }

    #[test]
    fn a_record_whose_length_lies_is_rejected() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, 0, Some(b"k"), Some(b"v"), &[]);
        // Claim one byte more than the fields use, and supply it.
        buf[0] += 2; // zigzag: +1
        buf.push(0);
        assert!(matches!(
            Record::decode(&buf),
            Err(RecordError::LengthMismatch { .. })
        ));
    }
}
