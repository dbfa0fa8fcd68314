//! libmend_ffi, the library apps link: [`mend_ffi_api`]'s uniffi exports as a cdylib (Android,
//! Python) and a staticlib (the iOS XCFramework). A crate of its own so that it can be built
//! without an rlib; see its Cargo.toml.

pub use mend_ffi_api::*;
