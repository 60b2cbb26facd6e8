//! Mutation fuzzing of the image reader: mutated versions of valid images
//! (the sample set, plus the seed files in `tests/corpus/`) must decode or
//! fail with an error, never panic, hang or allocate wildly. All three are
//! enforced: a panic is caught and reported with its input, a watchdog
//! fails the run when one decode makes no progress for [`STALL`] (or the
//! run passes [`DEADLINE`]), and this test binary's counting allocator
//! fails a decode whose live heap grows by more than [`ALLOC_CAP`].
//!
//! Deterministic: a seeded xorshift generator drives the mutations
//! (`FUZZ_SEED`, printed; fixed by default), so a run reports the same
//! counts every time. A failing input is written to
//! `tests/corpus/failures/` (commit it with the fix) and replayed first.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::write_sample_set;
use criu_core::images::pb::*;
use criu_core::images::{pagemap_error, ImageDir, ImageKind, ImageReader, Result};

/// Iterations per seed image.
const ROUNDS: usize = 20_000;
/// The default seed.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Most a single decode may grow the live heap by (inputs are a few KiB:
/// a decoder that trusts a length word would ask for up to 256 MiB).
const ALLOC_CAP: usize = 8 << 20;
/// How long one decode may take before the run counts as hung (a hang
/// guard on a shared, loaded machine, never a timing check).
const STALL: Duration = Duration::from_secs(60);
/// The whole run's deadline.
const DEADLINE: Duration = Duration::from_secs(600);

/// The global allocator of this test binary: counts live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The most one decode grew the heap by, for the summary.
static MOST_GROWN: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call goes straight to the system allocator; the counters
// are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: p was allocated by System with layout l.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What is being decoded now, for the watchdog: a description and when it began.
static CURRENT: Mutex<Option<(String, Instant)>> = Mutex::new(None);

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Reads `bytes` as an image of `kind` the way restore would.
fn decode(kind: ImageKind, bytes: &[u8]) -> Result<()> {
    let mut r = ImageReader::from_reader("fuzz.img", Cursor::new(bytes), kind)?;
    match kind {
        ImageKind::Inventory => drop(r.read_one::<InventoryEntry>()?),
        ImageKind::Pstree => drop(r.read_all::<PstreeEntry>()?),
        ImageKind::Core => {
            for c in r.read_all::<CoreEntry>()? {
                let _ = c.restore_error(true);
            }
        }
        ImageKind::Ids => drop(r.read_one::<TaskKobjIdsEntry>()?),
        ImageKind::Mm => drop(r.read_one::<MmEntry>()?.layout_error()),
        ImageKind::Pagemap => {
            r.read_next::<PagemapHead>()?;
            let entries = r.read_all::<PagemapEntry>()?;
            let _ = pagemap_error(&common::core_vmas(), &entries);
        }
        ImageKind::Fdinfo => drop(r.read_all::<FdinfoEntry>()?),
        ImageKind::Files => {
            for f in r.read_all::<FileEntry>()? {
                let _ = f.union_error();
            }
        }
        ImageKind::Fs => drop(r.read_one::<FsEntry>()?),
        ImageKind::PipesData => while r.read_entry_with_payload::<PipeDataEntry>()?.is_some() {},
        ImageKind::GhostFile => {
            let g: GhostFileEntry = r.read_next()?;
            r.read_raw(g.size())?;
        }
        ImageKind::StatsDump => drop(r.read_one::<StatsEntry>()?),
        ImageKind::RemapFpath => drop(r.read_all::<RemapFilePathEntry>()?),
        _ => {}
    }
    Ok(())
}

fn mutate(rng: &mut XorShift, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => data[rng.below(len)] ^= 1 << rng.below(8),
            1 if len > 0 => data[rng.below(len)] = rng.next() as u8,
            2 => data.truncate(rng.below(len + 1)),
            3 => {
                let at = rng.below(len + 1);
                let n = rng.below(16);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, junk);
            }
            4 if len >= 4 => {
                // Overwrite what may be a length word with a random size.
                let at = rng.below(len - 3);
                let v = match rng.below(3) {
                    0 => rng.next() as u32,
                    1 => (rng.next() % 256) as u32,
                    _ => u32::MAX - rng.below(8) as u32,
                };
                data[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            5 if len > 0 => {
                let at = rng.below(len);
                data.drain(at..(at + rng.below(8)).min(len));
            }
            _ => {
                // Protobuf varint continuation bytes, which stress the decoder.
                let at = rng.below(len + 1);
                data.splice(at..at, std::iter::repeat_n(0x80, rng.below(12)));
            }
        }
    }
}

/// Kind of a seed file, from its name (`crit-` prefix allowed); `None` for
/// files without a header.
fn kind_of(path: &Path) -> Option<ImageKind> {
    let name = path.file_name()?.to_str()?;
    let (kind, _) = ImageKind::from_file_name(name.strip_prefix("crit-").unwrap_or(name))?;
    (!kind.header().bytes().is_empty()).then_some(kind)
}

fn seeds() -> Vec<(ImageKind, PathBuf, Vec<u8>)> {
    let tmp = tempfile::tempdir().unwrap();
    write_sample_set(&ImageDir::create(tmp.path()).unwrap());
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out = Vec::new();
    for dir in [tmp.path(), corpus.as_path()] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if let Some(k) = kind_of(&p) {
                out.push((k, p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/failures")
}

/// Decodes `data` as `kind` under the panic catcher and the allocation
/// cap; on a failure keeps the input and panics naming it (`what`).
fn checked_decode(what: &str, kind: ImageKind, data: &[u8]) -> Result<()> {
    *CURRENT.lock().unwrap() = Some((what.to_owned(), Instant::now()));
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let got = std::panic::catch_unwind(|| {
        let _ = ImageKind::detect("fuzz.img", data);
        decode(kind, data)
    });
    let grown = PEAK.load(Relaxed).saturating_sub(base);
    MOST_GROWN.fetch_max(grown, Relaxed);
    *CURRENT.lock().unwrap() = None;
    let why = match &got {
        Err(_) => Some("the decoder panicked".to_owned()),
        Ok(_) if grown > ALLOC_CAP => Some(format!("one decode grew the heap by {grown} bytes (cap {ALLOC_CAP})")),
        Ok(Err(e)) if !e.to_string().starts_with("fuzz.img: ") => Some(format!("error without file name: {e}")),
        _ => None,
    };
    if let Some(why) = why {
        let name = format!("{}-{:016x}.img", kind.stem(), data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)));
        let kept = failures_dir().join(&name);
        let _ = std::fs::create_dir_all(failures_dir());
        let _ = std::fs::write(&kept, data);
        panic!("{what}: {why}\n  input ({} bytes, as {kind:?}) kept in {}: {:02x?}", data.len(), kept.display(), data);
    }
    got.unwrap()
}

/// Fails the whole test binary if a decode stalls or the run overruns.
fn start_watchdog() {
    let start = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Some((what, since)) = CURRENT.lock().unwrap().clone() {
            let stalled = since.elapsed() > STALL;
            if stalled || start.elapsed() > DEADLINE {
                eprintln!(
                    "images_fuzz: {} while decoding {what}; failing the run",
                    if stalled { format!("no progress for {STALL:?}") } else { format!("past the {DEADLINE:?} deadline") }
                );
                std::process::exit(101);
            }
        }
    });
}

#[test]
fn mutated_images_never_panic_hang_or_allocate_wildly() {
    start_watchdog();
    let seed_value = std::env::var("FUZZ_SEED")
        .map(|v| v.parse().unwrap_or_else(|_| panic!("FUZZ_SEED={v} is not a number")))
        .unwrap_or(SEED);
    eprintln!("images_fuzz: FUZZ_SEED={seed_value}");
    // Inputs that failed before: as each kind (none may panic, hang or blow up).
    if let Ok(rd) = std::fs::read_dir(failures_dir()) {
        let mut kept: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
        kept.sort();
        for p in kept {
            let data = std::fs::read(&p).unwrap();
            for k in ImageKind::ALL {
                let _ = checked_decode(&format!("kept input {} as {k:?}", p.display()), *k, &data);
            }
        }
    }
    let seeds = seeds();
    assert!(seeds.len() >= 12, "too few seeds: {}", seeds.len());
    let mut rng = XorShift(seed_value.max(1));
    let (mut ok, mut rejected) = (0usize, 0usize);
    for (kind, path, seed) in &seeds {
        decode(*kind, seed)
            .unwrap_or_else(|e| panic!("seed {} does not decode: {e}", path.display()));
        for i in 0..ROUNDS {
            let mut data = seed.clone();
            mutate(&mut rng, &mut data);
            // Mostly as the seed's own kind; sometimes as a random one.
            let k = if rng.below(8) == 0 {
                ImageKind::ALL[rng.below(ImageKind::ALL.len())]
            } else {
                *kind
            };
            let what = format!("FUZZ_SEED={seed_value}, seed {} mutant {i}", path.file_name().unwrap().to_string_lossy());
            match checked_decode(&what, k, &data) {
                Ok(()) => ok += 1,
                Err(_) => rejected += 1,
            }
        }
    }
    eprintln!(
        "images_fuzz: {} seeds, {ok} mutants decoded, {rejected} rejected, at most {} bytes of heap per decode",
        seeds.len(),
        MOST_GROWN.load(Relaxed)
    );
    assert!(
        rejected > ok / 10,
        "mutations should be rejected often: ok {ok}, rejected {rejected}"
    );
}

/// Rewrites the seed corpus: the sample set re-encoded by crit's own
/// encoder (field order and encoding choices of another implementation).
/// Run with `cargo test --test images_fuzz -- --ignored refresh_corpus`.
#[test]
#[ignore = "a tool, not a test: rewrites tests/corpus with crit"]
fn refresh_corpus() {
    common::need_crit();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let tmp = tempfile::tempdir().unwrap();
    write_sample_set(&ImageDir::create(tmp.path()).unwrap());
    std::fs::create_dir_all(&corpus).unwrap();
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let p = e.unwrap().path();
        if kind_of(&p).is_some() {
            let json = common::crit_decode(&p, false);
            let name = format!("crit-{}", p.file_name().unwrap().to_str().unwrap());
            common::crit_encode(&json, &corpus.join(name));
        }
    }
    for e in std::fs::read_dir(&corpus).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            std::fs::remove_file(p).unwrap();
        }
    }
}
