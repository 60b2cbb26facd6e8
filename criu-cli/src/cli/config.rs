//! CRIU's configuration files.
//!
//! Read in this order, each overriding the ones before, the command line
//! last: `/etc/criu/default.conf`, `$HOME/.criu/default.conf` (neither
//! with `--no-default-config` or `--config`), `$CRIU_CONFIG_FILE`, then
//! `--config FILE`. A default file that does not exist is skipped; a file
//! named by `CRIU_CONFIG_FILE` or `--config` must exist.
//!
//! Syntax (CRIU's `parse_statement`): one option per line without its
//! dashes, an argument after blanks, in double quotes if it holds blanks
//! (`\"` inside quotes is a quote); `#` starts a comment; no commands.
//! Unlike CRIU, an option's argument is passed attached (`--NAME=VALUE`),
//! so that `verbosity 4` sets the level (CRIU's getopt drops an optional
//! argument given as a separate word).

use std::path::{Path, PathBuf};

/// The system-wide default file.
pub const GLOBAL: &str = "/etc/criu/default.conf";

/// The files to read before the command line `args`, in order.
pub fn sources(args: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut no_default = false;
    let mut cmdline = None;
    let mut it = args.iter().take_while(|a| *a != "--");
    while let Some(a) = it.next() {
        if a == "--no-default-config" {
            no_default = true;
        } else if a == "--config" {
            cmdline = Some(PathBuf::from(it.next().ok_or("option '--config' requires an argument")?));
            no_default = true;
        } else if let Some(f) = a.strip_prefix("--config=") {
            cmdline = Some(PathBuf::from(f));
            no_default = true;
        }
    }
    let mut out = Vec::new();
    if !no_default {
        out.extend([PathBuf::from(GLOBAL)].into_iter().filter(|p| p.exists()));
        if let Some(home) = std::env::var_os("HOME") {
            out.extend([Path::new(&home).join(".criu/default.conf")].into_iter().filter(|p| p.exists()));
        }
    }
    if let Some(env) = std::env::var_os("CRIU_CONFIG_FILE") {
        out.push(PathBuf::from(env));
    }
    out.extend(cmdline);
    Ok(out)
}

/// Reads `path` into command-line words (`--NAME` or `--NAME=VALUE`).
pub fn read(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("configuration file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(word) = statement(line).map_err(|e| format!("configuration file {} line {}: {e}", path.display(), n + 1))? {
            out.push(word);
        }
    }
    Ok(out)
}

/// One line: `None` when empty or a comment.
fn statement(line: &str) -> Result<Option<String>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (name, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line.split('#').next().unwrap_or(line), ""),
    };
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(Some(format!("--{name}")));
    }
    let value = if let Some(quoted) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.chars();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.as_str().starts_with('"') => {
                    value.push('"');
                    chars.next();
                }
                '"' => {
                    closed = true;
                    break;
                }
                c => value.push(c),
            }
        }
        let after = chars.as_str().trim_start();
        if !closed || !(after.is_empty() || after.starts_with('#')) {
            return Err(format!("unsupported format {line:?} (see criu(8), CONFIGURATION FILES)"));
        }
        value
    } else {
        let value = rest.split('#').next().unwrap_or("").trim_end();
        if value.contains([' ', '\t']) {
            return Err(format!("unsupported format {line:?}: quote an argument holding blanks"));
        }
        value.to_string()
    };
    Ok(Some(format!("--{name}={value}")))
}

#[cfg(test)]
mod tests {
    use super::statement;

    #[test]
    fn criu_s_syntax() {
        let s = |l: &str| statement(l).unwrap();
        assert_eq!(s("tcp-established"), Some("--tcp-established".into()));
        assert_eq!(s("  # a comment"), None);
        assert_eq!(s(""), None);
        assert_eq!(s("no-restore-sibling   # another comment"), Some("--no-restore-sibling".into()));
        assert_eq!(s("verbosity 4"), Some("--verbosity=4".into()));
        assert_eq!(s("log-file\tx.log # c"), Some("--log-file=x.log".into()));
        assert_eq!(
            s(r#"work-dir "/home/u/criu/my \"work\" directory""#),
            Some(r#"--work-dir=/home/u/criu/my "work" directory"#.into())
        );
        assert_eq!(s(r#"lsm-profile "" "#), Some("--lsm-profile=".into()));
        assert!(statement("work-dir /a b").is_err());
        assert!(statement(r#"work-dir "/a b"  x"#).is_err());
        assert!(statement(r#"work-dir "/a b"#).is_err());
    }
}
