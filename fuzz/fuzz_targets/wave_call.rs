#![no_main]
//! Console calls against the Todo guest's functions: the guest is read
//! from `$GUEST_TODO_WASM` (scripts/fuzz.sh sets it).

use std::sync::LazyLock;

use host::fuzzing::CallTarget;

static TARGET: LazyLock<CallTarget> = LazyLock::new(|| {
    let path = std::env::var("GUEST_TODO_WASM")
        .expect("GUEST_TODO_WASM names the Todo guest's .wasm (scripts/fuzz.sh sets it)");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    CallTarget::new(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.run(data));
