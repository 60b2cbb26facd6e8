//! Mutation fuzzing of the image reader: mutated versions of valid images
//! (the sample set, plus the seed files in `tests/corpus/`) must decode or
//! fail with an error, never panic, hang or allocate wildly. Deterministic:
//! a fixed-seed xorshift generator drives the mutations.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::write_sample_set;
use criu_core::images::pb::*;
use criu_core::images::{pagemap_error, ImageDir, ImageKind, ImageReader, Result};

/// Iterations per seed image.
const ROUNDS: usize = 20_000;

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

#[test]
fn mutated_images_never_panic() {
    let seeds = seeds();
    assert!(seeds.len() >= 12, "too few seeds: {}", seeds.len());
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut rejected) = (0usize, 0usize);
    for (kind, path, seed) in &seeds {
        decode(*kind, seed)
            .unwrap_or_else(|e| panic!("seed {} does not decode: {e}", path.display()));
        for _ in 0..ROUNDS {
            let mut data = seed.clone();
            mutate(&mut rng, &mut data);
            let _ = ImageKind::detect("fuzz.img", &data);
            // Mostly as the seed's own kind; sometimes as a random one.
            let k = if rng.below(8) == 0 {
                ImageKind::ALL[rng.below(ImageKind::ALL.len())]
            } else {
                *kind
            };
            match decode(k, &data) {
                Ok(()) => ok += 1,
                Err(e) => {
                    assert!(
                        e.to_string().starts_with("fuzz.img: "),
                        "error without file name: {e}"
                    );
                    rejected += 1;
                }
            }
        }
    }
    eprintln!(
        "fuzz: {} seeds, {ok} mutants decoded, {rejected} rejected",
        seeds.len()
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
#[ignore]
fn refresh_corpus() {
    assert!(common::have_crit(), "refreshing the corpus needs crit");
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
