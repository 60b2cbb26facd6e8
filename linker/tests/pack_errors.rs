//! The packager against ELF files compiled with gcc at test time: each bad
//! one must be refused with an error naming its problem, and a good one
//! linked with `restorer.ld` must pack.

use linker::pack;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `source` (C) with gcc and `flags` into a file named `name`.
fn compile(name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pack_errors");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&src, source).unwrap();
    let status = Command::new("gcc")
        .args(["-O1", "-fPIC", "-nostdlib", "-nostartfiles", "-fno-asynchronous-unwind-tables"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run gcc (install it: apt-get install gcc)");
    assert!(status.success(), "gcc failed for {name}");
    std::fs::read(&out).unwrap()
}

fn pack_error(name: &str, source: &str, flags: &[&str]) -> String {
    match pack(&compile(name, source, flags)) {
        Ok(_) => panic!("{name}: packed although it should be refused"),
        Err(e) => e.to_string(),
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("restorer.ld")
}

/// C declaring one entry `c_entry` in the blob's `.entries` format.
const ENTRY_C: &str = r#"
struct entry { char name[32]; long (*func)(void *); };
static long c_entry(void *args) { return args ? 1 : 2; }
__attribute__((used, section(".entries"))) static const struct entry entries[] = { { "c_entry", c_entry } };
"#;

#[test]
fn refuses_a_data_relocation_against_an_undefined_symbol() {
    let msg = pack_error("data_reloc.so", "extern int missing_var; int *ptr = &missing_var;", &["-shared"]);
    assert!(msg.contains("relocation R_X86_64_"), "{msg}");
    assert!(msg.contains("against symbol `missing_var`"), "{msg}");
    assert!(msg.contains("not R_X86_64_RELATIVE"), "{msg}");
}

#[test]
fn refuses_a_call_through_the_plt() {
    let msg = pack_error("plt.so", "extern void missing_fn(void); void call_it(void) { missing_fn(); }", &["-shared"]);
    assert!(msg.contains("R_X86_64_JUMP_SLOT") || msg.contains("R_X86_64_GLOB_DAT"), "{msg}");
    assert!(msg.contains("`missing_fn`"), "{msg}");
}

#[test]
fn refuses_a_fixed_address_executable() {
    let msg = pack_error("exec", "void _start(void) { for (;;) ; }", &["-static", "-no-pie"]);
    assert!(msg.contains("ET_EXEC"), "{msg}");
    assert!(msg.contains("static PIE"), "{msg}");
}

#[test]
fn refuses_a_program_interpreter() {
    let msg = pack_error("dynpie", "void _start(void) { for (;;) ; }", &["-pie"]);
    assert!(msg.contains("PT_INTERP"), "{msg}");
}

#[test]
fn refuses_thread_local_storage() {
    let msg = pack_error("tls.so", "__thread int counter = 1; int get(void) { return counter; }", &["-shared"]);
    assert!(msg.contains("thread-local storage"), "{msg}");
}

#[test]
fn refuses_a_writable_executable_segment() {
    let msg = pack_error("wx.so", ENTRY_C, &["-shared", "-Wl,--omagic"]);
    assert!(msg.contains("writable and executable"), "{msg}");
}

#[test]
fn refuses_a_blob_without_entries() {
    let ld = script();
    let args = ["-static-pie", "-Wl,--no-dynamic-linker", "-Wl,-T", ld.to_str().unwrap()];
    let msg = pack_error("noentries", "static int x; int *ptr = &x; long f(void) { return *ptr; }", &args);
    assert!(msg.contains("no entry points"), "{msg}");
}

#[test]
fn refuses_a_blob_with_a_reachable_panic_handler() {
    let ld = script();
    let args = ["-static-pie", "-Wl,--no-dynamic-linker", "-Wl,-T", ld.to_str().unwrap()];
    let source = format!("void rust_begin_unwind(void) {{ for (;;) ; }}\n{}", ENTRY_C.replace("return args ? 1 : 2;", "if (!args) rust_begin_unwind(); return 1;"));
    let msg = pack_error("panics", &source, &args);
    assert!(msg.contains("`rust_begin_unwind`") && msg.contains("panic handler is reachable"), "{msg}");
}

#[test]
fn packs_a_c_blob_linked_with_the_restorer_script() {
    let ld = script();
    let args = ["-static-pie", "-Wl,--no-dynamic-linker", "-Wl,-T", ld.to_str().unwrap()];
    let pkg = pack(&compile("cblob", ENTRY_C, &args)).expect("a well-formed blob packs");
    let offset = pkg.entry("c_entry").expect("entry found");
    let text = pkg.segments().iter().find(|s| s.prot.executable()).unwrap();
    assert!(offset >= text.offset && offset < text.offset + text.size);
    // The entry's function pointer slot is relocated and pre-holds the offset.
    let slot = *pkg.relocs().iter().find(|&&r| pkg.image()[r as usize..r as usize + 8] == offset.to_le_bytes()).unwrap();
    assert!(pkg.segments().iter().any(|s| slot >= s.offset && slot < s.offset + s.size));
}
