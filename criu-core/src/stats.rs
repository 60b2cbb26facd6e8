//! CRIU's statistics images: `stats-dump` and `stats-restore` (service
//! images of one `stats_entry`, no `.img` suffix), which `crit show` and
//! CRIU's test driver read, and the `--display-stats` text.
//!
//! Times are in microseconds, as CRIU's `encode_time` writes them. criu-rs
//! writes every page count (shared memory included) in `pages_written`;
//! the `shpages_*` fields are 0 (CRIU's driver checks their sum against the
//! size of the `pages-*.img` files).

use crate::dump::DumpSummary;
use crate::images::{pb, ImageDir, ImageError, ImageKind};
use crate::restore::RestoreStats;
use std::path::Path;
use std::time::Duration;

fn micros(d: Duration) -> Option<u32> {
    Some(d.as_micros().min(u32::MAX as u128) as u32)
}

/// The `stats_entry` of a dump.
pub fn dump_entry(s: &DumpSummary) -> pb::StatsEntry {
    pb::StatsEntry {
        dump: Some(pb::DumpStatsEntry {
            freezing_time: micros(s.freezing_time),
            frozen_time: micros(s.frozen_time),
            memdump_time: micros(s.memdump_time),
            memwrite_time: micros(s.mem.write_time),
            pages_scanned: Some(s.mem.pages_scanned),
            pages_skipped_parent: Some(s.mem.pages_in_parent),
            pages_written: Some(s.mem.pages_written),
            irmap_resolve: Some(0),
            pages_lazy: Some(s.mem.pages_lazy),
            page_pipes: Some(0),
            page_pipe_bufs: Some(0),
            shpages_scanned: Some(0),
            shpages_skipped_parent: Some(0),
            shpages_written: Some(0),
        }),
        restore: None,
    }
}

/// The `stats_entry` of a restore.
pub fn restore_entry(s: &RestoreStats) -> pb::StatsEntry {
    pb::StatsEntry {
        dump: None,
        restore: Some(pb::RestoreStatsEntry {
            pages_compared: Some(0),
            pages_skipped_cow: Some(0),
            forking_time: micros(s.forking_time),
            restore_time: micros(s.restore_time),
            pages_restored: Some(s.pages_restored),
        }),
    }
}

/// Writes `stats-dump` (or `stats-restore`, after the entry's kind) into `dir`.
pub fn write(dir: &Path, entry: &pb::StatsEntry) -> Result<(), ImageError> {
    let kind = if entry.restore.is_some() { ImageKind::StatsRestore } else { ImageKind::StatsDump };
    ImageDir::open_unchecked(dir).write_one(kind, 0, entry)
}

/// The `--display-stats` text, CRIU's lines.
pub fn display(entry: &pb::StatsEntry) -> String {
    let mut out = String::new();
    let time = |out: &mut String, what: &str, us: Option<u32>| out.push_str(&format!("{what}: {} us\n", us.unwrap_or(0)));
    let count = |out: &mut String, what: &str, n: Option<u64>| {
        let n = n.unwrap_or(0);
        out.push_str(&format!("{what}: {n} ({n:#x})\n"));
    };
    if let Some(d) = &entry.dump {
        out.push_str("Displaying dump stats:\n");
        time(&mut out, "Freezing time", d.freezing_time);
        time(&mut out, "Frozen time", d.frozen_time);
        time(&mut out, "Memory dump time", d.memdump_time);
        time(&mut out, "Memory write time", d.memwrite_time);
        time(&mut out, "IRMAP resolve time", d.irmap_resolve);
        count(&mut out, "Memory pages scanned", d.pages_scanned);
        count(&mut out, "Memory pages skipped from parent", d.pages_skipped_parent);
        count(&mut out, "Memory pages written", d.pages_written);
        count(&mut out, "Lazy memory pages", d.pages_lazy);
        count(&mut out, "Page pipes", d.page_pipes);
        count(&mut out, "Page pipe buffers", d.page_pipe_bufs);
    }
    if let Some(r) = &entry.restore {
        out.push_str("Displaying restore stats:\n");
        count(&mut out, "Pages compared", r.pages_compared);
        count(&mut out, "Pages skipped COW", r.pages_skipped_cow);
        count(&mut out, "Pages restored", r.pages_restored);
        time(&mut out, "Restore time", r.restore_time);
        time(&mut out, "Forking time", r.forking_time);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_stats_round_trip_under_criu_s_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = RestoreStats { forking_time: Duration::from_micros(12), restore_time: Duration::from_millis(3), pages_restored: 5 };
        write(dir.path(), &restore_entry(&s)).unwrap();
        assert!(dir.path().join("stats-restore").is_file());
        let back: pb::StatsEntry = ImageDir::open_unchecked(dir.path()).read_one(ImageKind::StatsRestore, 0).unwrap();
        let r = back.restore.unwrap();
        assert_eq!((r.forking_time, r.restore_time, r.pages_restored), (Some(12), Some(3000), Some(5)));
        let text = display(&restore_entry(&s));
        assert!(text.contains("Pages restored: 5 (0x5)") && text.contains("Restore time: 3000 us"), "{text}");
    }
}
