//! `cargo xtask bench`: a table of measurements (`--only GROUP`: one group
//! of rows, see `main.rs`).

use anyhow::{Context, Result};
use criu_core::pie::{self, Loaded};
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process of a bench, killed and reaped when dropped (also when
/// the bench fails half-way).
pub(crate) struct Kill(pub(crate) Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let runs: u32 = match crate::flag_value(args, "--runs")? {
        Some(v) => v.parse().with_context(|| format!("bad --runs value {v}"))?,
        None => 1000,
    }
    .max(1);
    let root = crate::workspace_root();
    // Details of the lazy-pages rows, only on request, N runs each.
    match crate::flag_value(args, "--only")? {
        Some("lazy-fault") => {
            print_rows(&owned(crate::bench_lazy::fault_rows(&root, runs.min(20))?));
            return Ok(());
        }
        Some("lazy-bg") => {
            print_rows(&owned(crate::bench_lazy::bg_rows(&root, runs.min(20))?));
            return Ok(());
        }
        Some(o) if o == "user" || o.starts_with("user:") => {
            let cases = crate::bench_user::selected(Some(o))?;
            print_rows(&crate::bench_user::rows(&root, &cases, runs)?);
            return Ok(());
        }
        _ => {}
    }
    let pkg = pie::embedded()?;

    let start = Instant::now();
    for _ in 0..runs {
        drop(Loaded::map_anywhere(pkg)?);
    }
    let map = start.elapsed() / runs;

    let mut buf = vec![0u8; pkg.mem_size() as usize];
    let start = Instant::now();
    for _ in 0..runs {
        pie::relocate_into(pkg, &mut buf, 0x7f00_0000_0000)?;
    }
    let reloc = start.elapsed() / runs;

    // `--only blob|dump|restore|predump|live|lazy|fds|mmap`: one group of rows.
    let only = crate::flag_value(args, "--only")?;
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut rows: Vec<(&str, String)> = Vec::new();
    // The user's flow first (issue 15); the rows after it are warm
    // synthetic measurements of parts of it.
    let user = if only.is_none() { crate::bench_user::rows(&root, &crate::bench_user::selected(None)?, runs.min(3))? } else { Vec::new() };
    if want("blob") {
        rows.push(("blob package size", format!("{} bytes ({} mapped)", pie::EMBEDDED_PACKAGE.len(), pkg.mem_size())));
        rows.push(("blob map+relocate+mprotect", format!("{} (avg of {runs})", micros(map))));
        rows.push(("blob relocate_into buffer", format!("{} (avg of {runs})", micros(reloc))));
    }
    if want("dump") {
        rows.push(("dump throughput (warm, synthetic)", crate::bench_dump::dump_throughput(&root, runs.min(3))?));
    }
    if want("restore") {
        // Medians: more runs when the restore rows are all that is asked for.
        rows.extend(crate::bench_restore::rows(if only.is_some() { runs.min(15) } else { runs.min(5) })?);
    }
    if want("predump") {
        rows.push(crate::bench_predump::row(&root)?);
    }
    let mut live = Vec::new();
    if want("live") {
        live = crate::bench_live::rows(&root, runs.min(3))?;
    }
    if want("lazy") {
        rows.extend(crate::bench_lazy::rows(&root, runs.min(3))?);
    }
    if want("fds") {
        rows.extend(crate::bench_fds::rows(&root, if only.is_some() { runs.min(7) } else { runs.min(3) })?);
    }
    if want("mmap") {
        let criu_rs = crate::bench_lazy::build_criu_rs(&root)?;
        rows.extend(crate::bench_mmap::rows(&root, &criu_rs, if only.is_some() { runs.min(5) } else { runs.min(3) })?);
    }
    let mut all = user;
    all.extend(live);
    all.extend(owned(rows));
    print_rows(&all);
    Ok(())
}

/// Rows with owned labels.
fn owned(rows: Vec<(&str, String)>) -> Vec<(String, String)> {
    rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn print_rows(rows: &[(String, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:width$}  value", "measure");
    println!("{:-<width$}  {:-<30}", "", "");
    for (k, v) in rows {
        println!("{k:width$}  {v}");
    }
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}
