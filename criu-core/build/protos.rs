//! Compiles the image schemas in `proto/` with protox + prost-build.
//!
//! Three outputs land in `OUT_DIR`:
//! - `_.rs`: the prost message types (CRIU's schemas have no package, so
//!   prost-build names the file `_`);
//! - `descriptors.bin`: the encoded `FileDescriptorSet` of the schemas as
//!   written (exposed as `pb::FILE_DESCRIPTOR_SET`);
//! - `required.rs`: a generated `Validate` impl per message that reports the
//!   first missing proto2 `required` field.
//!
//! prost turns a `required` scalar into a bare value, so a missing field would
//! silently decode as zero. To keep presence visible, every `required` label is
//! relabelled `optional` before code generation: those fields become `Option`
//! and the generated `Validate` impls check them. The wire format is the same
//! for both labels.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Protobuf's own descriptor schema, imported only for CRIU's `(criu)` field
/// options; no Rust code is generated for it.
const DESCRIPTOR_PROTO: &str = "google/protobuf/descriptor.proto";

pub fn build() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-changed=build/protos.rs");

    let mut files: Vec<PathBuf> = std::fs::read_dir(&proto_dir)
        .expect("read proto/")
        .map(|e| e.expect("proto/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let names: Vec<&Path> = files
        .iter()
        .map(|p| p.strip_prefix(&proto_dir).unwrap())
        .collect();

    let mut compiler = protox::Compiler::new([&proto_dir]).expect("protox include path");
    compiler.include_imports(true);
    compiler
        .open_files(&names)
        .unwrap_or_else(|e| panic!("compiling proto/: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    // The schemas as written (labels untouched), for layout checks in tests.
    std::fs::write(out.join("descriptors.bin"), compiler.encode_file_descriptor_set()).expect("write descriptors.bin");
    let mut fds = compiler.file_descriptor_set();
    fds.file.retain(|f| f.name() != DESCRIPTOR_PROTO);

    let required = relabel_required(&mut fds);
    std::fs::write(out.join("required.rs"), validate_impls(&fds, &required))
        .expect("write required.rs");

    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("prost-build: {e}"));
}

/// Turns every `required` field into `optional`; returns, per message full
/// name (".msg"), the names of the fields that were required.
fn relabel_required(fds: &mut FileDescriptorSet) -> HashMap<String, Vec<String>> {
    fn walk(prefix: &str, msg: &mut DescriptorProto, out: &mut HashMap<String, Vec<String>>) {
        let full = format!("{prefix}.{}", msg.name());
        let mut req = Vec::new();
        for f in &mut msg.field {
            if f.label() == Label::Required {
                f.set_label(Label::Optional);
                req.push(f.name().to_owned());
            }
        }
        out.insert(full.clone(), req);
        for nested in &mut msg.nested_type {
            walk(&full, nested, out);
        }
    }
    let mut out = HashMap::new();
    for file in &mut fds.file {
        assert!(
            file.package.as_deref().unwrap_or("").is_empty(),
            "schemas must be package-less"
        );
        for msg in &mut file.message_type {
            walk("", msg, &mut out);
        }
    }
    out
}

/// Rust path (relative to the generated module) of a proto full name such as
/// `.core_entry` or `.outer.inner`, following prost-build's naming.
fn rust_path(full: &str) -> String {
    let parts: Vec<&str> = full.trim_start_matches('.').split('.').collect();
    let (last, mods) = parts.split_last().expect("non-empty type name");
    let mut s = String::new();
    for m in mods {
        write!(s, "{}::", m.to_snake_case()).unwrap();
    }
    s.push_str(&last.to_upper_camel_case());
    s
}

/// Rust field identifier prost-build generates for a proto field name.
fn rust_field(name: &str) -> String {
    let snake = name.to_snake_case();
    match snake.as_str() {
        "type" | "match" | "ref" | "mod" | "fn" | "loop" | "move" | "impl" | "use" | "self" => {
            format!("r#{snake}")
        }
        _ => snake,
    }
}

fn validate_impls(fds: &FileDescriptorSet, required: &HashMap<String, Vec<String>>) -> String {
    fn walk(
        prefix: &str,
        msg: &DescriptorProto,
        required: &HashMap<String, Vec<String>>,
        code: &mut String,
    ) {
        let full = format!("{prefix}.{}", msg.name());
        let req = &required[&full];
        writeln!(code, "impl Validate for {} {{", rust_path(&full)).unwrap();
        writeln!(code, "    fn missing_required(&self) -> Option<String> {{").unwrap();
        for f in &msg.field {
            let id = rust_field(f.name());
            let name = f.name();
            if req.iter().any(|r| r == name) {
                writeln!(
                    code,
                    "        if self.{id}.is_none() {{ return Some(\"{name}\".to_owned()); }}"
                )
                .unwrap();
            }
            if f.r#type() != Type::Message {
                continue;
            }
            if f.label() == Label::Repeated {
                writeln!(
                    code,
                    "        for (i, m) in self.{id}.iter().enumerate() {{ \
                     if let Some(p) = m.missing_required() {{ return Some(format!(\"{name}[{{i}}].{{p}}\")); }} }}"
                )
                .unwrap();
            } else {
                writeln!(
                    code,
                    "        if let Some(m) = &self.{id} {{ \
                     if let Some(p) = m.missing_required() {{ return Some(format!(\"{name}.{{p}}\")); }} }}"
                )
                .unwrap();
            }
        }
        writeln!(code, "        None\n    }}\n}}").unwrap();
        for nested in &msg.nested_type {
            walk(&full, nested, required, code);
        }
    }
    let mut code = String::from("// Generated by build/protos.rs: proto2 `required` checks.\n");
    for file in &fds.file {
        for msg in &file.message_type {
            walk("", msg, required, &mut code);
        }
    }
    code
}
