//! The load generator's HPACK decoder: two header blocks through one decoder (the second sees
//! the dynamic table the first left), each decoded or refused, never a panic.
#![no_main]

use transport::hpack::Decoder;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |first| *first as usize)
        .min(data.len());
    let (first, second) = data.split_at(split);
    let mut decoder = Decoder::new(4096);
    let mut fields = 0usize;
    if decoder.decode(first, |_, _| fields += 1).is_ok() {
        let _ = decoder.decode(second, |_, _| fields += 1);
    }
});
