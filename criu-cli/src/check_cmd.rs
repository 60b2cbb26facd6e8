//! `criu-rs check`, answering as `criu check` does.
//!
//! - `check`: probes what criu-rs needs ([`check::FEATURES`]), one line
//!   each, then CRIU's verdict: "Looks good." (exit 0) or "Does not look
//!   good." (exit 1).
//! - `--extra`, `--experimental`, `--all`: also every feature name CRIU
//!   knows ([`check::CRIU_FEATURES`]); a missing one gives CRIU's "Looks
//!   good but some kernel features are missing ..." and exit 1.
//! - `--feature NAME` (CRIU's names and criu-rs's own): "NAME is
//!   supported" and exit 0 only when criu-rs can do it here; `--feature
//!   list` prints the names.

use anyhow::{bail, Result};
use criu_core::check;

use crate::cli::Opts;

const CHECK_GOOD: &str = "Looks good.";
const CHECK_BAD: &str = "Does not look good.";
const CHECK_MAYBE: &str = "Looks good but some kernel features are missing\n\
                           which, depending on your process tree, may cause\n\
                           dump or restore failure.";

/// Every name `--feature` takes: CRIU's, then criu-rs's own.
fn names() -> Vec<&'static str> {
    let mut v: Vec<&str> = check::CRIU_FEATURES.iter().map(|f| f.name).collect();
    v.extend(check::FEATURES.iter().map(|f| f.name).filter(|n| check::find_criu(n).is_none()));
    v
}

/// One feature: `Ok(())` when criu-rs can do it, else why not and what it
/// disables (for criu-rs's own).
fn one(name: &str) -> Result<Result<(), (String, Option<&'static str>)>> {
    if let Some(f) = check::find_criu(name) {
        return Ok(f.check().map(drop).map_err(|why| (why, None)));
    }
    if let Some(f) = check::find(name) {
        return Ok(f.check().result.map_err(|why| (why, Some(f.disables))));
    }
    bail!("unknown feature {name:?}; known features: {}", names().join(", "))
}

/// `criu-rs check`.
pub fn check(o: &Opts) -> Result<i32> {
    if o.features.iter().any(|f| f == "list") {
        println!("{}", names().join(" "));
        return Ok(0);
    }
    if !o.features.is_empty() {
        let mut code = 0;
        for name in &o.features {
            match one(name)? {
                Ok(()) => println!("{name} is supported"),
                Err((why, disables)) => {
                    println!("{name} is NOT supported: {why}");
                    if let Some(d) = disables {
                        println!("  disables: {d}");
                    }
                    code = 1;
                }
            }
        }
        return Ok(code);
    }
    let mut missing = 0;
    for r in check::check_all() {
        match &r.result {
            Ok(()) => println!("{:<16} yes  {}", r.feature.name, r.feature.what),
            Err(why) => {
                // soft-dirty is optional: its absence disables nothing.
                if r.feature.name != "soft_dirty" {
                    missing += 1;
                }
                println!("{:<16} NO   {}", r.feature.name, r.feature.what);
                println!("{:<16}      {why}", "");
                println!("{:<16}      disables: {}", "", r.feature.disables);
            }
        }
    }
    if missing > 0 {
        println!("{missing} feature(s) criu-rs needs are missing: the features listed as disabled will not work.");
        println!("{CHECK_BAD}");
        return Ok(1);
    }
    let mut maybe = false;
    if o.check_extra || o.check_experimental {
        println!("CRIU's features, as criu-rs can do them here:");
        for f in check::CRIU_FEATURES {
            match f.check() {
                Ok(_) => println!("{:<26} yes", f.name),
                Err(why) => {
                    maybe = true;
                    println!("{:<26} NO   {why}", f.name);
                }
            }
        }
    }
    println!("{}", if maybe { CHECK_MAYBE } else { CHECK_GOOD });
    Ok(maybe as i32)
}
