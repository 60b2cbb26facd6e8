//! Checks our `proto/` schemas against the ones compiled into Debian's
//! `pycriu` (what `crit` decodes with): every field both sides know must have
//! the same number, type, label and message/enum type; fields only we have
//! must not reuse a number crit knows. Skipped (or failed under `CI`) when
//! crit/pycriu is missing.

use std::collections::BTreeMap;
use std::process::Command;

use criu_core::images::pb::FILE_DESCRIPTOR_SET;
use criu_core::images::ImageKind;
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::Value;

/// Field name -> (number, type, label, type name).
type Fields = BTreeMap<String, (i64, i64, i64, String)>;

/// Dumps pycriu's message and enum descriptors as JSON.
const PY_DUMP: &str = r#"
import json, importlib, pkgutil, pycriu.images as imgs
out = {"messages": {}, "enums": {}}
def walk_enum(e):
    out["enums"][e.full_name] = {v.name: v.number for v in e.values}
def walk_msg(d):
    out["messages"][d.full_name] = {f.name: [f.number, f.type, f.label,
        f.message_type.full_name if f.message_type else (f.enum_type.full_name if f.enum_type else "")]
        for f in d.fields}
    for n in d.nested_types: walk_msg(n)
    for e in d.enum_types: walk_enum(e)
for m in pkgutil.iter_modules(imgs.__path__):
    if m.name.endswith("_pb2"):
        mod = importlib.import_module("pycriu.images." + m.name)
        for d in mod.DESCRIPTOR.message_types_by_name.values(): walk_msg(d)
        for e in mod.DESCRIPTOR.enum_types_by_name.values(): walk_enum(e)
print(json.dumps(out))
"#;

/// The interpreter `crit` runs under (its `#!` line), if crit is installed.
fn crit_python() -> Option<String> {
    let which = Command::new("sh")
        .args(["-c", "command -v crit"])
        .output()
        .ok()?;
    let path = String::from_utf8(which.stdout).ok()?;
    let text = std::fs::read_to_string(path.trim()).ok()?;
    let first = text.lines().next()?;
    Some(
        first
            .strip_prefix("#!")?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

/// pycriu's message and enum descriptors; fails the test when crit/pycriu
/// is missing (not optional: `cargo xtask setup` installs Debian's `criu`).
fn pycriu_descriptors() -> Value {
    let py = crit_python();
    let out = py
        .as_ref()
        .and_then(|py| Command::new(py).arg("-c").arg(PY_DUMP).output().ok());
    match out {
        Some(o) if o.status.success() => {
            serde_json::from_slice(&o.stdout).expect("pycriu descriptor JSON")
        }
        _ => panic!(
            "crit/pycriu not available: run `cargo xtask setup` (installs Debian's `criu`)"
        ),
    }
}

fn ours() -> (
    BTreeMap<String, Fields>,
    BTreeMap<String, BTreeMap<String, i64>>,
) {
    fn enm(
        prefix: &str,
        e: &EnumDescriptorProto,
        enums: &mut BTreeMap<String, BTreeMap<String, i64>>,
    ) {
        let vals = e
            .value
            .iter()
            .map(|v| (v.name().to_owned(), i64::from(v.number())))
            .collect();
        enums.insert(format!("{prefix}{}", e.name()), vals);
    }
    fn walk(
        prefix: &str,
        m: &DescriptorProto,
        msgs: &mut BTreeMap<String, Fields>,
        enums: &mut BTreeMap<String, BTreeMap<String, i64>>,
    ) {
        let full = format!("{prefix}{}", m.name());
        let fields = m
            .field
            .iter()
            .map(|f| {
                let tn = f.type_name().trim_start_matches('.').to_owned();
                (
                    f.name().to_owned(),
                    (
                        i64::from(f.number()),
                        f.r#type() as i64,
                        f.label() as i64,
                        tn,
                    ),
                )
            })
            .collect();
        msgs.insert(full.clone(), fields);
        for n in &m.nested_type {
            walk(&format!("{full}."), n, msgs, enums);
        }
        for e in &m.enum_type {
            enm(&format!("{full}."), e, enums);
        }
    }
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let (mut msgs, mut enums) = (BTreeMap::new(), BTreeMap::new());
    for f in fds.file.iter().filter(|f| !f.name().starts_with("google/")) {
        for m in &f.message_type {
            walk("", m, &mut msgs, &mut enums);
        }
        for e in &f.enum_type {
            enm("", e, &mut enums);
        }
    }
    (msgs, enums)
}

/// Fields crit has that we leave out on purpose: other architectures' registers.
fn deliberately_absent(msg: &str, field: &str) -> bool {
    msg == "core_entry" && field.starts_with("ti_")
}

/// Fields renamed by CRIU after Debian's crit was built: (message, crit's
/// name, current name). Field 2 of `pagemap_entry` was `nr_pages`; current
/// CRIU calls it `compat_nr_pages` and added a 64-bit `nr_pages` = 5.
const RENAMED: &[(&str, &str, &str)] = &[("pagemap_entry", "nr_pages", "compat_nr_pages")];

fn current_name<'a>(msg: &str, crit_name: &'a str) -> &'a str {
    RENAMED
        .iter()
        .find(|r| r.0 == msg && r.1 == crit_name)
        .map_or(crit_name, |r| r.2)
}

#[test]
fn schemas_match_crit() {
    let py = pycriu_descriptors();
    let (msgs, enums) = ours();
    let mut errors = Vec::new();
    let mut newer = Vec::new();

    for (name, fields) in &msgs {
        let Some(theirs) = py["messages"].get(name) else {
            newer.push(name.clone());
            continue;
        };
        let theirs = theirs.as_object().unwrap();
        for (fname, spec) in theirs {
            let spec = spec.as_array().unwrap();
            let want = (
                spec[0].as_i64().unwrap(),
                spec[1].as_i64().unwrap(),
                spec[2].as_i64().unwrap(),
                spec[3].as_str().unwrap().to_owned(),
            );
            match fields.get(current_name(name, fname)) {
                Some(got) if *got == want => {}
                Some(got) => errors.push(format!("{name}.{fname}: ours {got:?}, crit {want:?}")),
                None if deliberately_absent(name, fname) => {}
                None => errors.push(format!(
                    "{name}.{fname}: missing from our schema (crit {want:?})"
                )),
            }
        }
        for (fname, got) in fields {
            if theirs.keys().any(|t| current_name(name, t) == fname) {
                continue;
            }
            if theirs.values().any(|s| s[0].as_i64() == Some(got.0)) {
                errors.push(format!(
                    "{name}.{fname}: number {} is another field in crit",
                    got.0
                ));
            } else {
                newer.push(format!("{name}.{fname}"));
            }
        }
    }
    for (name, vals) in &enums {
        let Some(theirs) = py["enums"].get(name).and_then(Value::as_object) else {
            continue;
        };
        for (v, n) in theirs {
            if vals.get(v) != n.as_i64().as_ref() {
                errors.push(format!("enum {name}.{v}: ours {:?}, crit {n}", vals.get(v)));
            }
        }
    }
    for kind in ImageKind::ALL {
        let e = kind.entry_name();
        if !e.is_empty() && !msgs.contains_key(e) {
            errors.push(format!("{kind:?}: entry message {e} is not in our schemas"));
        }
    }
    eprintln!("messages/fields newer than crit (not checked): {newer:?}");
    assert!(
        errors.is_empty(),
        "schema mismatches:\n{}",
        errors.join("\n")
    );
    assert!(msgs.len() > 80, "only {} messages compiled", msgs.len());
}
