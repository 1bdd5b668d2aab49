//! HPACK (RFC 7541) for the generator's own HTTP/2 client: encoding a request's header block
//! once, and decoding the header blocks a server answers with. The encoder never indexes, so
//! the server's decoder table stays empty; the decoder keeps a full dynamic table, so a server
//! may send its repeated response headers (`grpc-status: 0`, `content-type`) as one-byte
//! indexes, which is cheaper for it too.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is in neither the static nor the dynamic table")]
    BadIndex(usize),
    #[error("invalid Huffman code")]
    BadHuffman,
    #[error("dynamic table size update to {0} exceeds the advertised {1}")]
    TableTooLarge(usize, usize),
}

/// A request header block for a POST of `path` on `authority` with gRPC's headers, encoded as
/// literals without indexing.
pub fn encode_grpc_request(path: &str, authority: &str, tls: bool) -> Vec<u8> {
    let mut block = Vec::with_capacity(64 + path.len() + authority.len());
    block.push(0x80 | 3); // :method: POST
    block.push(0x80 | if tls { 7 } else { 6 }); // :scheme: https or http
    literal_with_indexed_name(&mut block, 4, path); // :path
    literal_with_indexed_name(&mut block, 1, authority); // :authority
    literal_with_indexed_name(&mut block, 31, "application/grpc"); // content-type
    block.push(0); // a literal name, not indexed
    string(&mut block, "te");
    string(&mut block, "trailers");
    block
}

fn literal_with_indexed_name(block: &mut Vec<u8>, name_index: usize, value: &str) {
    integer(block, 0x00, 4, name_index);
    string(block, value);
}

fn string(block: &mut Vec<u8>, text: &str) {
    integer(block, 0x00, 7, text.len());
    block.extend_from_slice(text.as_bytes());
}

/// An integer with an `prefix_bits`-bit prefix after the pattern bits in `first`.
fn integer(block: &mut Vec<u8>, first: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        block.push(first | value as u8);
        return;
    }
    block.push(first | max as u8);
    value -= max;
    while value >= 128 {
        block.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    block.push(value as u8);
}

/// The decoding side of one connection: its dynamic table lives as long as the connection.
pub struct Decoder {
    table: Table,
    /// RFC 7541 4.1: each entry counts its name and value plus 32.
    size: usize,
    max_size: usize,
    /// The most a size update may ask for: what we advertised in SETTINGS_HEADER_TABLE_SIZE.
    limit: usize,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Decoder {
    pub fn new(limit: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Calls `field` with each header's name and value, in order.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = read_integer(&mut block, 7)?;
                let (name, value) = entry(&self.table, index)?;
                field(name, value);
            } else if first & 0xc0 == 0x40 {
                let index = read_integer(&mut block, 6)?;
                self.literal(&mut block, index)?;
                field(&self.name, &self.value);
                self.insert();
            } else if first & 0xe0 == 0x20 {
                let size = read_integer(&mut block, 5)?;
                if size > self.limit {
                    return Err(Error::TableTooLarge(size, self.limit));
                }
                self.max_size = size;
                self.evict_to(size);
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                let index = read_integer(&mut block, 4)?;
                self.literal(&mut block, index)?;
                field(&self.name, &self.value);
            }
        }
        Ok(())
    }

    /// Reads a literal field into `self.name` and `self.value`; `index` 0 means a literal name.
    fn literal(&mut self, block: &mut &[u8], index: usize) -> Result<(), Error> {
        self.name.clear();
        if index == 0 {
            read_string(block, &mut self.name)?;
        } else {
            let (name, _) = entry(&self.table, index)?;
            self.name.extend_from_slice(name);
        }
        self.value.clear();
        read_string(block, &mut self.value)
    }

    fn insert(&mut self) {
        let size = self.name.len() + self.value.len() + 32;
        if size > self.max_size {
            // RFC 7541 4.4: an entry larger than the table empties it and is not added.
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.table.push_front((
            self.name.clone().into_boxed_slice(),
            self.value.clone().into_boxed_slice(),
        ));
        self.size += size;
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let (name, value) = self.table.pop_back().expect("a non-zero size has entries");
            self.size -= name.len() + value.len() + 32;
        }
    }
}

type Table = VecDeque<(Box<[u8]>, Box<[u8]>)>;

/// Index 1..=61 is the static table, 62 on the dynamic table, newest entry first.
fn entry(table: &Table, index: usize) -> Result<(&[u8], &[u8]), Error> {
    if let Some(&(name, value)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
        return Ok((name.as_bytes(), value.as_bytes()));
    }
    index
        .checked_sub(STATIC_TABLE.len() + 1)
        .and_then(|i| table.get(i))
        .map(|(name, value)| (&name[..], &value[..]))
        .ok_or(Error::BadIndex(index))
}

fn read_integer(block: &mut &[u8], prefix_bits: u32) -> Result<usize, Error> {
    let (&first, mut rest) = block.split_first().ok_or(Error::Truncated)?;
    let max = (1usize << prefix_bits) - 1;
    let mut value = first as usize & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&byte, tail) = rest.split_first().ok_or(Error::Truncated)?;
            rest = tail;
            if shift > 21 {
                return Err(Error::IntegerOverflow);
            }
            value += ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

fn read_string(block: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let huffman = block.first().is_some_and(|first| first & 0x80 != 0);
    let length = read_integer(block, 7)?;
    if block.len() < length {
        return Err(Error::Truncated);
    }
    let (text, rest) = block.split_at(length);
    *block = rest;
    if huffman {
        decode_huffman(text, out)
    } else {
        out.extend_from_slice(text);
        Ok(())
    }
}

/// RFC 7541 Appendix B, bit lengths of the codes of bytes 0..=255 and EOS (256). The code is
/// canonical: codes of one length are consecutive and follow all shorter ones in symbol order,
/// so the lengths alone define it.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const EOS: u16 = 256;
const MAX_CODE_LENGTH: usize = 30;

/// The canonical code's decoding tables: for each length, its first code, how many codes have
/// it, and where its symbols start in `symbols` (all symbols ordered by length, then value).
struct Canonical {
    first_code: [u32; MAX_CODE_LENGTH + 1],
    count: [u32; MAX_CODE_LENGTH + 1],
    first_symbol: [u16; MAX_CODE_LENGTH + 1],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = {
    let mut table = Canonical {
        first_code: [0; MAX_CODE_LENGTH + 1],
        count: [0; MAX_CODE_LENGTH + 1],
        first_symbol: [0; MAX_CODE_LENGTH + 1],
        symbols: [0; 257],
    };
    let mut next = 0;
    let mut code = 0u32;
    let mut length = 1;
    while length <= MAX_CODE_LENGTH {
        code <<= 1;
        table.first_code[length] = code;
        table.first_symbol[length] = next as u16;
        let mut symbol = 0;
        while symbol < 257 {
            if CODE_LENGTHS[symbol] as usize == length {
                table.symbols[next] = symbol as u16;
                next += 1;
                table.count[length] += 1;
            }
            symbol += 1;
        }
        code += table.count[length];
        length += 1;
    }
    table
};

fn decode_huffman(encoded: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let mut code = 0u32;
    let mut length = 0usize;
    for byte in encoded {
        for shift in (0..8).rev() {
            code = code << 1 | u32::from(byte >> shift & 1);
            length += 1;
            let offset = code.wrapping_sub(CANONICAL.first_code[length]);
            if offset < CANONICAL.count[length] {
                let symbol =
                    CANONICAL.symbols[(CANONICAL.first_symbol[length] as u32 + offset) as usize];
                if symbol == EOS {
                    return Err(Error::BadHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                length = 0;
            } else if length == MAX_CODE_LENGTH {
                return Err(Error::BadHuffman);
            }
        }
    }
    // RFC 7541 5.2: padding is fewer than 8 bits, all ones (the start of EOS).
    if length >= 8 || code != (1 << length) - 1 {
        return Err(Error::BadHuffman);
    }
    Ok(())
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut fields = Vec::new();
        decoder.decode(block, |name, value| {
            fields.push((
                String::from_utf8(name.to_vec()).unwrap(),
                String::from_utf8(value.to_vec()).unwrap(),
            ))
        })?;
        Ok(fields)
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// RFC 7541 C.6: three responses with Huffman strings in a 256-byte table, so entries are
    /// evicted; the table's contents after each are the RFC's.
    #[test]
    fn decodes_the_rfc_response_examples_with_huffman_and_eviction() {
        let mut decoder = Decoder::new(256);
        let first = hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        );
        assert_eq!(
            decode_all(&mut decoder, &first).unwrap(),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(decoder.size, 222);
        let second = hex("4883 640e ff c1 c0 bf");
        assert_eq!(
            decode_all(&mut decoder, &second).unwrap(),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(decoder.size, 222);
        let third = hex(
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        );
        assert_eq!(
            decode_all(&mut decoder, &third).unwrap(),
            pairs(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                (
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                ),
            ])
        );
        assert_eq!(decoder.size, 215);
        assert_eq!(decoder.table.len(), 3);
    }

    /// Every byte value through the Huffman code: a string holding each of 0..=255 encoded by
    /// the canonical code built from the lengths decodes back to itself.
    #[test]
    fn huffman_round_trips_every_byte() {
        let mut codes = [0u32; 257];
        for length in 1..=MAX_CODE_LENGTH {
            let first = CANONICAL.first_symbol[length] as usize;
            for offset in 0..CANONICAL.count[length] as usize {
                codes[CANONICAL.symbols[first + offset] as usize] =
                    CANONICAL.first_code[length] + offset as u32;
            }
        }
        // Spot checks against RFC 7541 Appendix B.
        assert_eq!(
            (codes[b'0' as usize], CODE_LENGTHS[b'0' as usize]),
            (0x0, 5)
        );
        assert_eq!(
            (codes[b'a' as usize], CODE_LENGTHS[b'a' as usize]),
            (0x3, 5)
        );
        assert_eq!((codes[0], CODE_LENGTHS[0]), (0x1ff8, 13));
        assert_eq!((codes[256], CODE_LENGTHS[256]), (0x3fffffff, 30));
        let text: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        let mut bits: u64 = 0;
        let mut pending = 0;
        let mut encoded = Vec::new();
        for &byte in &text {
            bits = bits << CODE_LENGTHS[byte as usize] | codes[byte as usize] as u64;
            pending += CODE_LENGTHS[byte as usize] as u32;
            while pending >= 8 {
                pending -= 8;
                encoded.push((bits >> pending) as u8);
            }
        }
        if pending > 0 {
            encoded.push((bits << (8 - pending)) as u8 | (0xff >> pending));
        }
        let mut decoded = Vec::new();
        decode_huffman(&encoded, &mut decoded).unwrap();
        assert_eq!(decoded, text);
    }

    #[test]
    fn bad_huffman_padding_and_eos_are_errors() {
        let mut out = Vec::new();
        // "0" is 00000; padding with zeros instead of ones.
        assert_eq!(decode_huffman(&[0x00], &mut out), Err(Error::BadHuffman));
        assert_eq!(decode_huffman(&[0x07], &mut out.clone()), Ok(()));
        // A whole byte of padding.
        assert_eq!(
            decode_huffman(&[0x07, 0xff], &mut out),
            Err(Error::BadHuffman)
        );
        // EOS itself (30 ones).
        assert_eq!(
            decode_huffman(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(Error::BadHuffman)
        );
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut decoder, &[0x80 | 62]),
            Err(Error::BadIndex(62))
        );
        assert_eq!(decode_all(&mut decoder, &[0x80]), Err(Error::BadIndex(0)));
        assert_eq!(
            decode_all(&mut decoder, &[0x40, 0x05, b'a']),
            Err(Error::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xff, 0xff]),
            Err(Error::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(Error::IntegerOverflow)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0xe2, 0x1f]),
            Err(Error::TableTooLarge(4097, 4096))
        );
        assert_eq!(decode_all(&mut decoder, &[0x3f, 0xe1, 0x1f]), Ok(vec![]));
        // Every truncation of a valid block is an error, never a panic, except at field ends.
        let block = hex("4882 6402 5885 aec3 771a 4b");
        let field_ends = [0, 4, block.len()];
        for end in 0..block.len() {
            let result = decode_all(&mut Decoder::new(4096), &block[..end]);
            assert_eq!(result.is_ok(), field_ends.contains(&end), "cut at {end}");
        }
    }

    #[test]
    fn a_size_update_evicts_and_an_indexed_literal_is_then_found() {
        let mut decoder = Decoder::new(4096);
        // grpc-status: 0 with incremental indexing, then referenced as index 62.
        let mut block = vec![0x40];
        string(&mut block, "grpc-status");
        string(&mut block, "0");
        block.push(0x80 | 62);
        assert_eq!(
            decode_all(&mut decoder, &block).unwrap(),
            pairs(&[("grpc-status", "0"), ("grpc-status", "0")])
        );
        // Size update to 0 empties the table: index 62 is gone.
        assert_eq!(
            decode_all(&mut decoder, &[0x20, 0x80 | 62]),
            Err(Error::BadIndex(62))
        );
    }

    #[test]
    fn the_request_block_decodes_to_the_grpc_headers() {
        let block = encode_grpc_request("/sluice.v1.RateLimiter/Check", "127.0.0.1:50051", false);
        assert_eq!(
            decode_all(&mut Decoder::new(0), &block).unwrap(),
            pairs(&[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/sluice.v1.RateLimiter/Check"),
                (":authority", "127.0.0.1:50051"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ])
        );
        // Long values use the integer's continuation bytes.
        let long = "x".repeat(300);
        let block = encode_grpc_request(&format!("/{long}"), "h", true);
        let fields = decode_all(&mut Decoder::new(0), &block).unwrap();
        assert_eq!(fields[2].1.len(), 301);
        assert_eq!(fields[1], (":scheme".into(), "https".into()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Fuzzing the decoder with whatever a server could send: blocks of random bytes, and
        /// random edits of valid blocks, through one decoder (its table carries over). It may
        /// refuse a block, never panic, and its table never outgrows what we advertised.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            blocks in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                1..8,
            ),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()),
                0..6,
            ),
        ) {
            let mut decoder = Decoder::new(256);
            // A literal with incremental indexing and a new name: grpc-status: 0.
            let mut valid = vec![0x40];
            string(&mut valid, "grpc-status");
            string(&mut valid, "0");
            for (at, byte) in &edits {
                let at = at % valid.len();
                valid[at] = *byte;
            }
            for block in blocks.iter().chain([&valid]) {
                let _ = decoder.decode(block, |name, value| {
                    assert!(name.len() + value.len() < 1 << 20);
                });
                proptest::prop_assert!(decoder.size <= decoder.max_size);
                proptest::prop_assert!(decoder.max_size <= decoder.limit);
            }
        }
    }
}
