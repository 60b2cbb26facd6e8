//! `criu_opts` (CRIU's rpc.proto) as the criu-rs command line it stands
//! for: each field becomes the option CRIU's command line has for it, so
//! that the RPC and the command line accept, refuse and do the same. The
//! words keep the field they came from, and a refusal names the field.
//!
//! The fields without a command-line form are handled here:
//! `images_dir_fd`, `work_dir_fd` and `status_fd` are the caller's
//! descriptors, reached as `/proc/PEER/fd/N` (as CRIU does); `pid` defaults
//! to the caller; `log_file` may not name a subdirectory and defaults to
//! `criu.log` (CRIU's RPC always logs to a file unless `log_to_stderr`);
//! those criu-rs cannot honour (`orphan_pts_master`, `config_file`,
//! `pidfd_store_sk`, `ps.fd`) are refused by name.

use anyhow::{bail, Result};
use criu_core::images::pb::CriuRpcOpts;

use super::req;
use crate::cli::{Cmd, Opts};

/// CRIU's default log file in RPC mode (`DEFAULT_LOG_FILENAME`).
const DEFAULT_LOG: &str = "criu.log";

/// Who asked: where the descriptors named in the options live.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// SO_PEERCRED's pid of the RPC socket.
    pub pid: i32,
    /// `criu-rs swrk` (the caller's descriptors were inherited: `inherit_fd`
    /// is allowed), not `criu-rs service`.
    pub swrk: bool,
}

/// An option refused for the request: a bad request (CRIU answers these
/// with `cr_errno` EBADRQC).
#[derive(Debug)]
pub struct BadOpts(pub String);

impl std::fmt::Display for BadOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadOpts {}

/// The command line of one request.
#[derive(Debug)]
pub struct CommandLine {
    /// (the `criu_opts` field, its words), in order; the command first.
    words: Vec<(&'static str, Vec<String>)>,
}

impl CommandLine {
    /// All the words.
    pub fn args(&self) -> Vec<String> {
        self.words.iter().flat_map(|(_, w)| w.iter().cloned()).collect()
    }

    /// The field a command-line option (`--NAME`) came from.
    fn field_of(&self, long: &str) -> Option<&'static str> {
        let long = format!("--{long}");
        self.words.iter().find(|(_, w)| w.iter().any(|x| *x == long || x.starts_with(&format!("{long}=")))).map(|(f, _)| *f)
    }

    /// Parses the words as criu-rs's command line would be, and refuses,
    /// naming the field, what criu-rs refuses for `cmd`.
    pub fn parse(&self, cmd: Cmd) -> Result<Opts> {
        let (_, opts) = crate::cli::parse(&self.args()).map_err(|e| BadOpts(format!("criu_opts: {e}")))?;
        for (long, (given, on, why)) in &opts.refused {
            if on.contains(&cmd) {
                let field = self.field_of(long).unwrap_or("?");
                return Err(BadOpts(format!("not supported: criu_opts.{field} ({given}: {why})")).into());
            }
        }
        Ok(opts)
    }
}

/// The command a request type runs.
pub fn command(ty: i32) -> Option<Cmd> {
    Some(match ty {
        req::DUMP => Cmd::Dump,
        req::PRE_DUMP => Cmd::PreDump,
        req::RESTORE => Cmd::Restore,
        req::CHECK => Cmd::Check,
        req::PAGE_SERVER | req::PAGE_SERVER_CHLD => Cmd::PageServer,
        _ => return None,
    })
}

/// The command line of request `cmd` with options `o` from `caller`.
pub fn command_line(cmd: Cmd, o: &CriuRpcOpts, caller: Caller) -> Result<CommandLine, BadOpts> {
    refuse_unsupported(o, caller)?;
    let mut l = Line(vec![("type", vec![cmd.name().to_string()])]);
    let proc_fd = |fd: i32| format!("/proc/{}/fd/{fd}", caller.pid);
    // images_dir_fd is required in CRIU's schema, with -1 for "none".
    match (o.images_dir_fd.filter(|&fd| fd >= 0), &o.images_dir) {
        (Some(fd), _) => l.opt("images_dir_fd", "-D", proc_fd(fd)),
        (None, Some(d)) => l.opt("images_dir", "-D", d.clone()),
        (None, None) if cmd == Cmd::Check => {}
        (None, None) => return Err(BadOpts("neither images_dir_fd nor images_dir was given".into())),
    }
    if let Some(fd) = o.work_dir_fd {
        l.opt("work_dir_fd", "-W", proc_fd(fd));
    }
    let has_dir = o.images_dir_fd.is_some_and(|fd| fd >= 0) || o.images_dir.is_some() || o.work_dir_fd.is_some();
    match &o.log_file {
        Some(f) if f.contains('/') => return Err(BadOpts(format!("criu_opts.log_file {f:?}: no subdirectories are allowed (use work_dir_fd)"))),
        Some(f) if o.log_to_stderr != Some(true) => l.opt("log_file", "-o", f.clone()),
        None if o.log_to_stderr != Some(true) && has_dir => l.opt("log_file", "-o", DEFAULT_LOG.into()),
        _ => {}
    }
    l.word("log_level", format!("-v{}", o.log_level.unwrap_or(2)));
    if matches!(cmd, Cmd::Dump | Cmd::PreDump) {
        l.opt("pid", "-t", o.pid.unwrap_or(caller.pid).to_string());
    }
    l.flag("leave_running", o.leave_running, "--leave-running");
    l.flag("leave_stopped", o.leave_stopped, "--leave-stopped");
    match (o.ext_unix_sk, o.unix_sk_ino.is_empty()) {
        (Some(true), true) => l.word("ext_unix_sk", "--ext-unix-sk".into()),
        (Some(true), false) => {
            let inodes: Vec<String> = o.unix_sk_ino.iter().map(|u| u.inode.unwrap_or(0).to_string()).collect();
            l.word("unix_sk_ino", format!("--ext-unix-sk={}", inodes.join(",")));
        }
        _ => {}
    }
    l.flag("tcp_established", o.tcp_established, "--tcp-established");
    l.flag("tcp_skip_in_flight", o.tcp_skip_in_flight, "--skip-in-flight");
    l.flag("tcp_close", o.tcp_close, "--tcp-close");
    l.flag("evasive_devices", o.evasive_devices, "--evasive-devices");
    l.flag("shell_job", o.shell_job, "--shell-job");
    l.flag("file_locks", o.file_locks, "--file-locks");
    l.flag("track_mem", o.track_mem, "--track-mem");
    l.flag("link_remap", o.link_remap, "--link-remap");
    l.flag("auto_dedup", o.auto_dedup, "--auto-dedup");
    l.flag("force_irmap", o.force_irmap, "--force-irmap");
    l.flag("rst_sibling", o.rst_sibling, "--restore-sibling");
    l.flag("weak_sysctls", o.weak_sysctls, "--weak-sysctls");
    l.flag("lazy_pages", o.lazy_pages, "--lazy-pages");
    l.flag("tls", o.tls, "--tls");
    l.flag("tls_no_cn_verify", o.tls_no_cn_verify, "--tls-no-cn-verify");
    l.flag("mntns_compat_mode", o.mntns_compat_mode, "--mntns-compat-mode");
    l.flag("skip_file_rwx_check", o.skip_file_rwx_check, "--skip-file-rwx-check");
    l.flag("unprivileged", o.unprivileged, "--unprivileged");
    l.flag("display_stats", o.display_stats, "--display-stats");
    l.flag("ext_sharing", o.ext_sharing, "--enable-external-sharing");
    l.flag("ext_masters", o.ext_masters, "--enable-external-masters");
    if o.auto_ext_mnt == Some(true) {
        l.opt("auto_ext_mnt", "--ext-mount-map", "auto".into());
    }
    if let Some(r) = &o.root {
        l.opt("root", "--root", r.clone());
    }
    if let Some(p) = &o.parent_img {
        l.opt("parent_img", "--prev-images-dir", p.clone());
    }
    for v in &o.veths {
        l.opt("veths", "--veth-pair", format!("{}={}", v.if_in.as_deref().unwrap_or(""), v.if_out.as_deref().unwrap_or("")));
    }
    if let Some(caps) = o.cpu_cap {
        l.word("cpu_cap", format!("--cpu-cap={}", cpu_caps(caps)));
    }
    if !o.exec_cmd.is_empty() {
        l.word("exec_cmd", "--exec-cmd".into());
    }
    for m in &o.ext_mnt {
        l.opt("ext_mnt", "--ext-mount-map", format!("{}:{}", m.key.as_deref().unwrap_or(""), m.val.as_deref().unwrap_or("")));
    }
    let mode = match (o.manage_cgroups_mode, o.manage_cgroups) {
        (Some(m), _) => Some(cgroup_mode(m)?),
        (None, Some(true)) => Some("soft"),
        (None, Some(false)) => Some("ignore"),
        (None, None) => None,
    };
    if let Some(mode) = mode {
        let field = if o.manage_cgroups_mode.is_some() { "manage_cgroups_mode" } else { "manage_cgroups" };
        l.word(field, format!("--manage-cgroups={mode}"));
    }
    for c in &o.cg_root {
        let path = c.path.as_deref().unwrap_or("");
        l.opt("cg_root", "--cgroup-root", c.ctrl.as_ref().map_or(path.to_string(), |ctl| format!("{ctl}:{path}")));
    }
    for i in &o.inherit_fd {
        l.opt("inherit_fd", "--inherit-fd", format!("fd[{}]:{}", i.fd.unwrap_or(-1), i.key.as_deref().unwrap_or("")));
    }
    for p in &o.skip_mnt {
        l.opt("skip_mnt", "--skip-mnt", p.clone());
    }
    if !o.enable_fs.is_empty() {
        l.opt("enable_fs", "--enable-fs", o.enable_fs.join(","));
    }
    if let Some(g) = o.ghost_limit {
        l.opt("ghost_limit", "--ghost-limit", g.to_string());
    }
    for p in &o.irmap_scan_paths {
        l.opt("irmap_scan_paths", "--irmap-scan-path", p.clone());
    }
    for e in &o.external {
        l.opt("external", "--external", e.clone());
    }
    match o.empty_ns {
        None | Some(0) => {}
        Some(n) if n == libc::CLONE_NEWNET as u32 => l.opt("empty_ns", "--empty-ns", "net".into()),
        Some(n) => return Err(BadOpts(format!("criu_opts.empty_ns {n:#x}: only CLONE_NEWNET is allowed"))),
    }
    for j in &o.join_ns {
        let mut v = format!("{}:{}", j.ns.as_deref().unwrap_or(""), j.ns_file.as_deref().unwrap_or(""));
        if let Some(extra) = &j.extra_opt {
            v = format!("{v},{extra}");
        }
        l.opt("join_ns", "--join-ns", v);
    }
    let strings = [
        ("cgroup_props", "--cgroup-props", &o.cgroup_props),
        ("cgroup_props_file", "--cgroup-props-file", &o.cgroup_props_file),
        ("freeze_cgroup", "--freeze-cgroup", &o.freeze_cgroup),
        ("lsm_profile", "--lsm-profile", &o.lsm_profile),
        ("lsm_mount_context", "--lsm-mount-context", &o.lsm_mount_context),
        ("tls_cacert", "--tls-cacert", &o.tls_cacert),
        ("tls_cacrl", "--tls-cacrl", &o.tls_cacrl),
        ("tls_cert", "--tls-cert", &o.tls_cert),
        ("tls_key", "--tls-key", &o.tls_key),
        ("cgroup_yard", "--cgroup-yard", &o.cgroup_yard),
    ];
    for (field, long, v) in strings {
        if let Some(v) = v {
            l.opt(field, long, v.clone());
        }
    }
    for c in &o.cgroup_dump_controller {
        l.opt("cgroup_dump_controller", "--cgroup-dump-controller", c.clone());
    }
    if let Some(t) = o.timeout {
        l.opt("timeout", "--timeout", t.to_string());
    }
    match o.pre_dump_mode {
        None => {}
        Some(1) => l.opt("pre_dump_mode", "--pre-dump-mode", "splice".into()),
        Some(2) => l.opt("pre_dump_mode", "--pre-dump-mode", "read".into()),
        Some(m) => return Err(BadOpts(format!("criu_opts.pre_dump_mode {m}: not a criu_pre_dump_mode"))),
    }
    match o.network_lock {
        None => {}
        Some(1) => l.opt("network_lock", "--network-lock", "iptables".into()),
        Some(2) => l.opt("network_lock", "--network-lock", "nftables".into()),
        Some(3) => l.opt("network_lock", "--network-lock", "skip".into()),
        Some(m) => return Err(BadOpts(format!("criu_opts.network_lock {m}: not a criu_network_lock_method"))),
    }
    // The page server to send pages to (dump), or to serve them from
    // (dump with lazy_pages); a PAGE_SERVER request listens itself.
    if let Some(ps) = o.ps.as_ref().filter(|_| cmd != Cmd::PageServer) {
        if o.lazy_pages != Some(true) {
            l.word("ps", "--page-server".into());
        }
        if let Some(a) = &ps.address {
            l.opt("ps", "--address", a.clone());
        }
        if let Some(p) = ps.port {
            l.opt("ps", "--port", p.to_string());
        }
    }
    if cmd == Cmd::Restore {
        // CRIU's RPC restore is detached: the answer carries the root's pid.
        l.word("type", "--restore-detached".into());
    }
    Ok(CommandLine { words: l.0 })
}

/// The words being built, each with its field.
struct Line(Vec<(&'static str, Vec<String>)>);

impl Line {
    fn word(&mut self, field: &'static str, w: String) {
        self.0.push((field, vec![w]));
    }
    fn opt(&mut self, field: &'static str, long: &str, v: String) {
        self.0.push((field, vec![long.to_string(), v]));
    }
    fn flag(&mut self, field: &'static str, on: Option<bool>, long: &str) {
        if on == Some(true) {
            self.word(field, long.to_string());
        }
    }
}

/// `criu_cg_mode` as `--manage-cgroups`'s value.
fn cgroup_mode(m: i32) -> Result<&'static str, BadOpts> {
    Ok(match m {
        0 => "ignore",
        1 => "none",
        2 => "props",
        3 => "soft",
        4 => "full",
        5 => "strict",
        6 => "default",
        _ => return Err(BadOpts(format!("criu_opts.manage_cgroups_mode {m}: not a criu_cg_mode"))),
    })
}

/// CRIU's `cpu_cap` bits (FPU 1, CPU 2, INS 4; all set: everything) as
/// `--cpu-cap`'s value.
fn cpu_caps(caps: u32) -> String {
    const NAMES: [(u32, &str); 3] = [(1, "fpu"), (2, "cpu"), (4, "ins")];
    if caps == u32::MAX {
        return "all".into();
    }
    let names: Vec<&str> = NAMES.iter().filter(|(bit, _)| caps & bit != 0).map(|(_, n)| *n).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// The fields with no command-line form that criu-rs cannot honour.
fn refuse_unsupported(o: &CriuRpcOpts, caller: Caller) -> Result<(), BadOpts> {
    let refused = [
        ("orphan_pts_master", o.orphan_pts_master == Some(true), "criu-rs does not hand a new pty master to the caller"),
        ("config_file", o.config_file.is_some(), "pass the options themselves"),
        ("pidfd_store_sk", o.pidfd_store_sk.is_some(), "criu-rs keeps no pidfds between pre-dumps (FEATURE_CHECK says pidfd_store false)"),
        ("ps.fd", o.ps.as_ref().is_some_and(|p| p.fd.is_some()), "give the page server's address and port"),
        ("status_fd", o.status_fd.is_some() && !caller.swrk, "use the status-ready notification"),
        ("inherit_fd", !o.inherit_fd.is_empty() && !caller.swrk, "inherit_fd is for `swrk` only (the service has not the caller's descriptors)"),
        ("rst_sibling", o.rst_sibling == Some(true) && !caller.swrk, "rst_sibling is for `swrk` only"),
    ];
    if let Some((field, _, why)) = refused.iter().find(|(_, set, _)| *set) {
        return Err(BadOpts(format!("not supported: criu_opts.{field} ({why})")));
    }
    Ok(())
}

/// `status_fd` (obsolete in CRIU, still honoured): the caller's descriptor
/// reopened for writing; its number for `--status-fd`.
pub fn status_fd(o: &CriuRpcOpts, caller: Caller) -> Result<Option<i32>> {
    let Some(fd) = o.status_fd else { return Ok(None) };
    let path = format!("/proc/{}/fd/{fd}", caller.pid);
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(f) => Ok(Some(std::os::fd::IntoRawFd::into_raw_fd(f))),
        Err(e) => bail!(BadOpts(format!("criu_opts.status_fd: reopening {path}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_core::images::pb::{CriuPageServerInfo, InheritFd};

    const SWRK: Caller = Caller { pid: 4242, swrk: true };

    fn words(cmd: Cmd, o: &CriuRpcOpts) -> Vec<String> {
        command_line(cmd, o, SWRK).unwrap().args()
    }

    #[test]
    fn descriptors_are_the_caller_s_and_the_log_defaults_to_criu_log() {
        let o = CriuRpcOpts { images_dir_fd: Some(7), work_dir_fd: Some(9), ..Default::default() };
        let w = words(Cmd::Dump, &o).join(" ");
        assert_eq!(w, "dump -D /proc/4242/fd/7 -W /proc/4242/fd/9 -o criu.log -v2 -t 4242");
        let o = CriuRpcOpts { images_dir_fd: Some(-1), images_dir: Some("/imgs".into()), log_to_stderr: Some(true), log_level: Some(4), ..Default::default() };
        assert_eq!(words(Cmd::Restore, &o).join(" "), "restore -D /imgs -v4 --restore-detached");
        assert_eq!(words(Cmd::Check, &CriuRpcOpts::default()).join(" "), "check -v2");
        assert!(command_line(Cmd::Dump, &CriuRpcOpts::default(), SWRK).is_err(), "no images directory");
        let o = CriuRpcOpts { images_dir_fd: Some(3), log_file: Some("../x.log".into()), ..Default::default() };
        assert!(command_line(Cmd::Dump, &o, SWRK).unwrap_err().0.contains("log_file"));
    }

    #[test]
    fn options_map_to_criu_s_command_line_and_refusals_name_the_field() {
        let o = CriuRpcOpts {
            images_dir_fd: Some(3),
            pid: Some(77),
            leave_running: Some(true),
            tcp_established: Some(true),
            manage_cgroups_mode: Some(0),
            inherit_fd: vec![InheritFd { key: Some("pipe:[12]".into()), fd: Some(5) }],
            external: vec!["unix[5]".into()],
            ps: Some(CriuPageServerInfo { address: Some("127.0.0.1".into()), port: Some(2000), ..Default::default() }),
            ..Default::default()
        };
        let cl = command_line(Cmd::Dump, &o, SWRK).unwrap();
        let w = cl.args().join(" ");
        for part in ["-t 77", "--leave-running", "--tcp-established", "--manage-cgroups=ignore", "--inherit-fd fd[5]:pipe:[12]", "--external unix[5]", "--page-server --address 127.0.0.1 --port 2000"] {
            assert!(w.contains(part), "{part} in {w}");
        }
        let o = CriuRpcOpts { images_dir_fd: Some(3), auto_dedup: Some(true), ..Default::default() };
        let e = command_line(Cmd::Dump, &o, SWRK).unwrap().parse(Cmd::Dump).unwrap_err().to_string();
        assert!(e.contains("criu_opts.auto_dedup") && e.contains("--auto-dedup"), "{e}");
        let o = CriuRpcOpts { images_dir_fd: Some(3), orphan_pts_master: Some(true), ..Default::default() };
        assert!(command_line(Cmd::Restore, &o, SWRK).unwrap_err().0.contains("criu_opts.orphan_pts_master"));
        let o = CriuRpcOpts { images_dir_fd: Some(3), inherit_fd: vec![InheritFd::default()], ..Default::default() };
        assert!(command_line(Cmd::Restore, &o, Caller { swrk: false, ..SWRK }).unwrap_err().0.contains("inherit_fd"));
        assert_eq!(cpu_caps(u32::MAX), "all");
        assert_eq!(cpu_caps(5), "fpu,ins");
        assert_eq!(cpu_caps(0), "none");
    }
}
