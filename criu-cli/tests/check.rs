//! `criu-rs check`: the full report and `--feature NAME` must agree, and
//! unknown names are refused.

mod common;

use common::*;

/// `criu-rs ARGS`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = criu_rs().args(args).output().expect("run criu-rs");
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn report_lists_every_feature_and_single_checks_agree() {
    let (code, out, _) = run(&["check"]);
    let mut missing_required = 0;
    for name in criu_core::check::FEATURES.iter().map(|f| f.name) {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("feature {name} missing from report:\n{out}"));
        let supported = line.split_whitespace().nth(1) == Some("yes");
        if !supported && name != "soft_dirty" {
            missing_required += 1;
        }
        let (one, one_out, _) = run(&["check", "--feature", name]);
        assert_eq!(one == 0, supported, "check --feature {name} disagrees with the report: {one_out}");
        if !supported {
            assert!(one_out.contains("disables:"), "no consequence given for {name}: {one_out}");
        }
    }
    assert_eq!(code == 0, missing_required == 0, "overall exit code {code} for report:\n{out}");
}

#[test]
fn features_this_project_needs_are_present_here() {
    // The machines this project runs on provide these (see the README); a
    // regression in a probe shows up here.
    // seccomp_*: what CRIU's test driver asks before its seccomp tests.
    for name in ["ptrace", "clone3_set_tid", "uffd", "uffd-wp-async", "pagemap_scan", "map_files", "prctl_mm_map", "seccomp_suspend", "seccomp_filters"] {
        let (code, out, err) = run(&["check", "--feature", name]);
        assert_eq!(code, 0, "{name}: {out}{err}");
    }
}

#[test]
fn unknown_feature_is_refused() {
    let (code, _, err) = run(&["check", "--feature", "no-such-thing"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown feature") && err.contains("uffd"), "{err}");
}
