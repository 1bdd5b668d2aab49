//! The service's TOML configuration: any text is a config or a list of issues, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = sluice::config::Config::parse(text, "fuzz.toml", &sluice::config::Overrides::default());
});
