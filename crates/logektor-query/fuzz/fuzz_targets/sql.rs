#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logektor_query::fuzzing::sql(data));
