//! Build script: packages the restorer blob and compiles CRIU's image schemas.
//!
//! Each half lives in its own file under `build/`.

#[path = "build/blob.rs"]
mod blob;
#[path = "build/protos.rs"]
mod protos;

fn main() {
    blob::build();
    protos::build();
}
