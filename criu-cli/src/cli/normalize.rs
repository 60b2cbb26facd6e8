//! From CRIU's `getopt_long` rules to one canonical argument list for clap.
//!
//! CRIU reads its options with `getopt_long` over the configuration files
//! and then the command line, and later words override earlier ones. Some
//! of its rules are not clap's, so this pass reads the words as CRIU does
//! ([`tokenize`]) and writes them again in a form whose meaning clap cannot
//! get wrong ([`canonical`]):
//!
//! - `--name`, `--name=value`, `--name value` (required argument only); an
//!   optional argument must be attached (`--verbosity=4`, `-x12`, `-v4`);
//! - any unambiguous prefix of a long name (`--leave-run`);
//! - `--no-NAME` for boolean options, the last of `--NAME`/`--no-NAME`
//!   winning (across files and command line);
//! - short options bundled (`-dR`), a required argument attached or next
//!   (`-t123`, `-t 123`);
//! - `-v` alone adds one to the level, `-vvv` one per `v`, `-vN` and
//!   `--verbosity=N` set it; `-R` and `-s` (the final state): the last wins;
//! - words that are not options are positional, wherever they are; `--`
//!   makes every later word positional.
//!
//! The canonical list is the command, then every option once, by its long
//! name, with `=` before a value (an option given several times keeps
//! each value, in order, when it collects them, else only the last).

use super::table::{Arg, Opt, OPTIONS};

/// One option as read: the option, its value, `on` (false for `--no-NAME`).
#[derive(Clone)]
pub struct Occurrence {
    pub opt: &'static Opt,
    pub value: Option<String>,
    pub on: bool,
}

/// A resolved long name: the option and whether it was its `no-` form.
fn find_long(name: &str) -> Result<(&'static Opt, bool), String> {
    let names = || {
        OPTIONS.iter().flat_map(|o| {
            let neg = o.negatable.then(|| (format!("no-{}", o.long), o, false));
            std::iter::once((o.long.to_string(), o, true)).chain(neg)
        })
    };
    if let Some((_, o, on)) = names().find(|(n, _, _)| n == name) {
        return Ok((o, !on));
    }
    let mut hits: Vec<(String, &'static Opt, bool)> = Vec::new();
    for (n, o, on) in names().filter(|(n, _, _)| n.starts_with(name)) {
        if !hits.iter().any(|h| std::ptr::eq(h.1, o) && h.2 == on) {
            hits.push((n, o, on));
        }
    }
    match hits.as_slice() {
        [] => Err(format!("unrecognized option '--{name}'")),
        [(_, o, on)] => Ok((o, !on)),
        _ => Err(format!(
            "option '--{name}' is ambiguous; possibilities: {}",
            hits.iter().map(|h| format!("'--{}'", h.0)).collect::<Vec<_>>().join(" ")
        )),
    }
}

fn find_short(c: char) -> Result<&'static Opt, String> {
    OPTIONS.iter().find(|o| o.short == Some(c)).ok_or_else(|| format!("invalid option -- '{c}'"))
}

/// Reads `args` as CRIU's getopt does: options to `out`, in order; words
/// that are not options to `positional`.
pub fn tokenize(args: &[String], out: &mut Vec<Occurrence>, positional: &mut Vec<String>) -> Result<(), String> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            positional.extend(args[i..].iter().cloned());
            return Ok(());
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let (opt, negated) = find_long(name)?;
            let value = match (opt.arg, attached) {
                (Arg::None, Some(_)) => return Err(format!("option '--{}' doesn't allow an argument", opt.long)),
                (Arg::None, None) => None,
                (_, _) if negated => return Err(format!("option '--no-{}' doesn't allow an argument", opt.long)),
                (Arg::Optional(_), v) => v,
                (Arg::Required(_), Some(v)) => Some(v),
                (Arg::Required(_), None) => {
                    let v = args.get(i).ok_or_else(|| format!("option '--{}' requires an argument", opt.long))?;
                    i += 1;
                    Some(v.clone())
                }
            };
            out.push(Occurrence { opt, value, on: !negated });
            continue;
        }
        let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) else {
            positional.push(a.clone());
            continue;
        };
        for (at, c) in shorts.char_indices() {
            let opt = find_short(c)?;
            let rest = &shorts[at + c.len_utf8()..];
            let value = match opt.arg {
                Arg::None => None,
                Arg::Optional(_) => Some(rest.to_string()).filter(|r| !r.is_empty()),
                Arg::Required(_) if !rest.is_empty() => Some(rest.to_string()),
                Arg::Required(_) => {
                    let v = args.get(i).ok_or_else(|| format!("option requires an argument -- '{c}'"))?;
                    i += 1;
                    Some(v.clone())
                }
            };
            out.push(Occurrence { opt, value, on: true });
            if !matches!(opt.arg, Arg::None) {
                break;
            }
        }
    }
    Ok(())
}

/// CRIU's `atoi`: leading blanks, a sign, digits; anything else ends it
/// (0 if none).
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).fold(0i64, |n, d| n.saturating_mul(10).saturating_add((d - b'0') as i64));
    if neg {
        -n
    } else {
        n
    }
}

/// The log level after `occurrences` (CRIU's default is 2).
fn verbosity(occurrences: &[Occurrence]) -> Option<i64> {
    let mut level = None;
    for o in occurrences.iter().filter(|o| o.opt.long == "verbosity") {
        let now = level.unwrap_or(2);
        level = Some(match o.value.as_deref() {
            None => now + 1,
            Some(s) if s.starts_with('v') => now + s.len() as i64 + 1,
            Some(s) => atoi(s).clamp(0, i32::MAX as i64),
        });
    }
    level
}

/// The canonical words for `occurrences`: every option once, by its long
/// name, in table order (see the module documentation).
pub fn canonical(occurrences: &[Occurrence]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(level) = verbosity(occurrences) {
        out.push(format!("--verbosity={level}"));
    }
    // -R and -s set one thing: the last one counts.
    let final_state = occurrences.iter().rev().find(|o| o.opt.long == "leave-running" || o.opt.long == "leave-stopped");
    for opt in OPTIONS.iter().filter(|o| o.long != "verbosity") {
        let mine: Vec<&Occurrence> = occurrences.iter().filter(|o| std::ptr::eq(o.opt, opt)).collect();
        let Some(last) = mine.last() else { continue };
        if (opt.long == "leave-running" || opt.long == "leave-stopped") && !final_state.is_some_and(|f| std::ptr::eq(f.opt, opt)) {
            continue;
        }
        let word = |o: &Occurrence| match &o.value {
            Some(v) => format!("--{}={v}", opt.long),
            None => format!("--{}", opt.long),
        };
        match opt.arg {
            Arg::None if last.on => out.push(format!("--{}", opt.long)),
            Arg::None => {}
            _ if opt.repeat => out.extend(mine.iter().map(|o| word(o))),
            _ => out.push(word(last)),
        }
    }
    out
}
