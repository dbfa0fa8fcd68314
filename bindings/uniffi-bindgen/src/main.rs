//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings from the built mend-ffi
//! library. It lives in the workspace so the generator's version always matches the uniffi
//! that mend-ffi was built with (a mismatch fails at load time with a checksum error).

fn main() {
    uniffi::uniffi_bindgen_main()
}
