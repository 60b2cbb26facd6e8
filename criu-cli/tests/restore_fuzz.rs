//! Corrupted image sets: random byte flips in every image but the raw pages
//! file. `criu-rs restore -d` must either restore (exit 0; the test then
//! kills what it restored) or refuse with an `Error:` line (exit 1) and
//! leave no process behind. Anything else fails the test: a crash, another
//! exit status, a restore still running after [`PATIENCE`] (a hang), a
//! process left by a refused restore (any pid, not only the root's: the
//! test is a child subreaper, so everything criu-rs forked and left ends up
//! its child), or a changed image.
//!
//! Reproducible: the mutations come from `FUZZ_SEED` (printed; fixed by
//! default) and the images from the pid, chosen from a fixed list (all with
//! the same varint length, so the same seed flips the same bytes) or given
//! by `FUZZ_PID`. A failing input is kept in `tests/fuzz-corpus/NAME/`
//! (commit it with the fix): every run replays the corpus first.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// The default seed: a run without `FUZZ_SEED` is the same every time.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Mutated image sets per run.
const ROUNDS: u32 = 60;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let n = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(n.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

/// The pid the images name: `FUZZ_PID`, else the first free one of a fixed
/// list of low pids (2-byte varints, so the same seed flips the same bytes;
/// below 300, so no process of the machine takes it between rounds: see
/// [`free_pid`]), waiting up to [`PATIENCE`] for one.
fn fuzz_pid() -> i32 {
    if let Some(p) = env_num("FUZZ_PID") {
        return p as i32;
    }
    assert!(pid_counter() > LOW_PIDS.end, "the pid counter is still below {}: pids are not reserved yet", LOW_PIDS.end);
    let candidates: Vec<i32> = (1..=16).map(|i| LOW_PIDS.end - 1 - 9 * i).collect();
    let mut got = None;
    wait_until("a free pid for the fuzzer", PATIENCE, || {
        got = candidates.iter().copied().find(|p| !alive(*p));
        got.is_some()
    });
    got.unwrap()
}

/// Makes this process the reaper of every orphan below it.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Kills and reaps every descendant of this process (what a restore left:
/// children first, then what their deaths handed to this subreaper);
/// returns them with their state letters.
fn kill_children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut all = Vec::new();
    loop {
        let kids: Vec<(i32, char)> = children_of(me).into_iter().map(|p| (p, proc_state(p).unwrap_or('?'))).collect();
        if kids.is_empty() {
            return all;
        }
        for &(p, _) in &kids {
            // SAFETY: kill(2) of our own child, not yet reaped (so not recycled).
            unsafe { libc::kill(p, libc::SIGKILL) };
            // SAFETY: waitpid on our own child.
            unsafe { libc::waitpid(p, std::ptr::null_mut(), 0) };
        }
        all.extend(kids);
    }
}

/// One input: a directory of images.
struct Case<'a> {
    /// How to name it in a failure: seed and round, or corpus entry.
    what: String,
    dir: &'a Path,
    /// The mutations applied: file, offset, old byte, new byte.
    flips: Vec<(String, usize, u8, u8)>,
}

/// Restores one image set and judges the outcome (true: restored, false:
/// refused); on failure keeps the images in the corpus and panics with
/// everything needed to reproduce.
fn run_case(case: &Case, pid: i32, deadline: Instant) -> bool {
    let before = snapshot(case.dir);
    let fail = |why: String| -> ! {
        let kept = keep_in_corpus(case);
        panic!(
            "{}: {why}\n  mutations (file, offset, old, new): {:x?}\n  images kept in {}\n  reproduce: FUZZ_PID={pid} {}",
            case.what,
            case.flips,
            kept.display(),
            std::env::var("FUZZ_SEED").map(|s| format!("FUZZ_SEED={s}")).unwrap_or_default()
        )
    };
    let mut child = Proc::from(
        criu_rs().args(["restore", "--verify", "-d", "-v0", "-D"]).arg(case.dir).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait() {
            break s;
        }
        if t.elapsed() > PATIENCE {
            fail(format!("criu-rs restore still running after {PATIENCE:?} (a hang)"));
        }
        if Instant::now() > deadline {
            fail("the fuzz run passed its overall deadline".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr().unwrap(), &mut err).unwrap();
    let left = kill_children();
    match status.code() {
        Some(0) => {} // restored: what it restored was killed above
        Some(1) => {
            if !err.contains("Error:") {
                fail(format!("exit 1 without an error message: {err}"));
            }
            let live: Vec<_> = left.iter().filter(|(_, st)| *st != 'Z').collect();
            if !live.is_empty() {
                fail(format!("the refused restore left processes (pid, state) {live:?}: {err}"));
            }
        }
        _ => fail(format!("criu-rs ended with {status}: {err}")),
    }
    if alive(pid) {
        fail(format!("pid {pid} is still there after its restore was killed: {}", who_holds(pid)));
    }
    if before != snapshot(case.dir) {
        fail("restore changed the images".into());
    }
    status.success()
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus")
}

/// Copies a failing case's images into the corpus; returns where.
fn keep_in_corpus(case: &Case) -> PathBuf {
    if case.dir.starts_with(corpus_dir()) {
        return case.dir.to_owned();
    }
    let name: String = case.what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let to = corpus_dir().join(name);
    let _ = std::fs::create_dir_all(&to);
    for e in std::fs::read_dir(case.dir).unwrap() {
        let p = e.unwrap().path();
        let _ = std::fs::copy(&p, to.join(p.file_name().unwrap()));
    }
    to
}

/// The pid a corpus entry's images restore (from its `core-PID.img`).
fn pid_of_images(dir: &Path) -> Option<i32> {
    std::fs::read_dir(dir).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        name.strip_prefix("core-")?.strip_suffix(".img")?.parse().ok()
    })
}

#[test]
fn flipped_bytes_never_crash_hang_or_leave_a_task() {
    become_subreaper();
    let seed = env_num("FUZZ_SEED").unwrap_or(SEED);
    let pid = fuzz_pid();
    eprintln!("restore_fuzz: FUZZ_SEED={seed:#x} FUZZ_PID={pid}, {ROUNDS} rounds");
    let deadline = Instant::now() + PATIENCE * 10;

    // Inputs that failed before come first.
    if let Ok(rd) = std::fs::read_dir(corpus_dir()) {
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_dir()).collect();
        entries.sort();
        for dir in entries {
            let p = pid_of_images(&dir).unwrap_or(pid);
            wait_until(&format!("pid {p} free for corpus entry {}", dir.display()), PATIENCE, || !alive(p));
            let what = format!("corpus entry {}", dir.file_name().unwrap().to_string_lossy());
            run_case(&Case { what, dir: &dir, flips: vec![] }, p, deadline);
        }
    }

    let base = scratch("fuzz-base");
    ImageSet::minimal(pid).write(&base);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("pages-"))
        .collect();
    files.sort();
    let mut rng = Rng(seed);
    let dir = scratch("fuzz-run");
    let (mut restored, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        for e in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        for e in std::fs::read_dir(&base).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        let victim = &files[(rng.next() % files.len() as u64) as usize];
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        let path = dir.join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut flips = Vec::new();
        for _ in 0..1 + rng.next() % 3 {
            let i = (rng.next() % bytes.len() as u64) as usize;
            let old = bytes[i];
            bytes[i] ^= 1 << (rng.next() % 8);
            flips.push((name.clone(), i, old, bytes[i]));
        }
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("seed {seed:#x} round {round}");
        // Which way each went, for the summary: the same on every run.
        if run_case(&Case { what, dir: &dir, flips }, pid, deadline) {
            restored += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("restore_fuzz: {ROUNDS} rounds: {restored} restored, {refused} refused");
}
