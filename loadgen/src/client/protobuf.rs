//! Reading the few fields an answer's checks need straight from protobuf bytes, without
//! decoding (and allocating) the rest: what the gRPC and RLS answer readers share.

use bytes::Bytes;

/// The bytes of a length-delimited field whose key was just read from `buf`, split off it;
/// `None` when the length is unreadable or runs past the message.
pub fn take_length_delimited(buf: &mut Bytes) -> Option<Bytes> {
    let len = prost::encoding::decode_varint(buf)
        .ok()
        .and_then(|len| usize::try_from(len).ok())
        .filter(|len| *len <= buf.len())?;
    Some(buf.split_to(len))
}

/// A protobuf Duration in microseconds; absent or negative parts count as zero.
pub fn duration_us(duration: Option<prost_types::Duration>) -> u64 {
    duration.map_or(0, |d| {
        d.seconds.max(0) as u64 * 1_000_000 + d.nanos.max(0) as u64 / 1_000
    })
}
