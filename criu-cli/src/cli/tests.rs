//! The parser against CRIU's rules and the command lines CRIU's test driver
//! (zdtm.py), runc and the man page use.

use super::*;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn ok(s: &str) -> (Request, Opts) {
    std::env::remove_var("CRIU_CONFIG_FILE");
    parse(&words(&format!("--no-default-config {s}"))).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn run(s: &str) -> (Cmd, Opts) {
    match ok(s) {
        (Request::Run(c), o) => (c, o),
        (r, _) => panic!("{s}: {r:?}"),
    }
}

fn err(s: &str) -> String {
    parse(&words(&format!("--no-default-config {s}"))).map(|r| format!("{:?}", r.0)).expect_err(s)
}

#[test]
fn zdtm_command_lines() {
    // zdtm.py's __criu_act for dump, with its usual options.
    let (c, o) = run("dump --no-default-config --log-file dump.log --images-dir /tmp/d/1 --verbosity=4 \
                      --tree 42 --timeout 10 --pre-dump-mode splice --track-mem --prev-images-dir ../1");
    assert_eq!(c, Cmd::Dump);
    assert_eq!((o.tree, o.verbosity, o.timeout, o.track_mem), (Some(42), 4, 10, true));
    assert_eq!(o.log_file.as_deref(), Some(Path::new("dump.log")));
    assert_eq!(o.images_dir.as_deref(), Some(Path::new("/tmp/d/1")));
    assert_eq!(o.prev_images_dir.as_deref(), Some(Path::new("../1")));
    o.check_refused(Cmd::Dump).unwrap();
    // restore, detached, with a status descriptor and a pid file.
    let (c, o) = run("restore --log-file restore.log --images-dir /tmp/d/1 --verbosity=4 --restore-detached \
                      --pidfile /tmp/x.pid --status-fd 7");
    assert_eq!(c, Cmd::Restore);
    assert!(o.detach);
    assert_eq!((o.status_fd, o.pidfile.as_deref()), (Some(7), Some(Path::new("/tmp/x.pid"))));
    // check, as zdtm asks: note the single dash (getopt reads -v, value "erbosity=0").
    let (c, o) = run("check --no-default-config -verbosity=0 --feature userns");
    assert_eq!((c, o.verbosity, o.features.as_slice()), (Cmd::Check, 0, &["userns".to_string()][..]));
    // page-server and lazy-pages as zdtm starts them.
    let (c, o) = run("page-server --images-dir /d --port 12345 --status-fd 5 --pidfile ps.pid --lazy-pages");
    assert_eq!((c, o.port, o.lazy_pages), (Cmd::PageServer, Some(12345), true));
    let (c, o) = run("lazy-pages --page-server --port 12345 --address 127.0.0.1 --status-fd 5");
    assert_eq!((c, o.page_server, o.address.as_deref()), (Cmd::LazyPages, true, Some("127.0.0.1")));
}

#[test]
fn verbosity_as_criu() {
    assert_eq!(run("check").1.verbosity, 2);
    assert_eq!(run("check -v").1.verbosity, 3);
    assert_eq!(run("check -vvv").1.verbosity, 5);
    assert_eq!(run("check -v0").1.verbosity, 0);
    assert_eq!(run("-v4 check").1.verbosity, 4);
    assert_eq!(run("check --verbosity").1.verbosity, 3);
    assert_eq!(run("check --verbosity=1").1.verbosity, 1);
    assert_eq!(run("check -v -v").1.verbosity, 4);
    assert_eq!(run("check -v5").1.level(), 4);
    // An optional argument is only taken attached: "-v 4" is -v and a word.
    assert!(err("check -v 4").contains("excessive parameter"));
}

#[test]
fn getopt_forms() {
    // Options before the command, bundled shorts, attached values, prefixes.
    let (c, o) = run("-D /d -o x.log dump -t42 -Rj --leave-run");
    assert_eq!((c, o.tree, o.final_state, o.shell_job), (Cmd::Dump, Some(42), FinalState::Running, true));
    assert_eq!(run("dump -t 7 --images-dir=/i").1.images_dir.as_deref(), Some(Path::new("/i")));
    assert_eq!(run("restore -dj").1.detach, true);
    // --no- forms, the last word wins.
    let o = run("dump -t 1 --tcp-established --no-tcp-established --shell-job").1;
    assert!(!o.tcp_established && o.shell_job);
    // -s and -R: the last one wins.
    assert_eq!(run("dump -t 1 -R -s").1.final_state, FinalState::Stopped);
    // -x with and without inodes.
    assert_eq!(run("dump -t 1 -x").1.ext_unix_sk, Some(vec![]));
    assert_eq!(run("dump -t 1 -x12,34").1.ext_unix_sk, Some(vec![12, 34]));
    assert_eq!(run("dump -t 1 --ext-unix-sk=5").1.ext_unix_sk, Some(vec![5]));
    // "--" ends the options.
    assert!(err("dump -- -t 1").contains("excessive parameter"));
    // Errors name the option.
    assert!(err("dump --no-such-thing").contains("unrecognized option '--no-such-thing'"));
    assert!(err("dump --tr").contains("'--tree'"), "a unique prefix works; this one is not unique: {}", err("dump --tr"));
    assert!(err("dump -t").contains("requires an argument"));
    assert!(err("dump -t abc").contains("invalid pid"));
    assert!(err("dump --leave-running=1").contains("doesn't allow an argument"));
    assert!(err("dump -t 1 --pre-dump-mode bogus").contains("splice, read"));
    assert!(err("check --ms").contains("deprecated"));
}

#[test]
fn commands() {
    let print = |s: &str| match ok(s).0 {
        Request::Print(t) => t,
        r => panic!("{s}: {r:?}"),
    };
    assert!(print("--help").contains("restore"));
    let dump_help = print("dump -h");
    assert!(dump_help.contains("--tcp-established") && dump_help.contains("-t, --tree <PID>"), "{dump_help}");
    assert!(!dump_help.contains("--restore-sibling"), "restore's options are hidden in dump's help");
    assert!(print("help restore").contains("--restore-sibling"));
    assert!(print("-V").contains(env!("CARGO_PKG_VERSION")));
    assert!(print("dump -V").contains(env!("CARGO_PKG_VERSION")));
    assert!(err("").contains("no command"));
    assert!(err("frobnicate").contains("unknown command"));
    assert!(err("dedup").contains("not supported: command \"dedup\""));
    assert!(err("dump restore").contains("excessive parameter for command dump: restore"));
}

#[test]
fn every_criu_option_parses() {
    // Every long option of CRIU 4.2 (criu/config.c), with an argument where
    // it takes one: parsed, never "unrecognized".
    let with_arg = [
        "tree=1", "images-dir=/", "work-dir=/", "log-file=x", "join-ns=net:1", "root=/", "close=99", "pidfile=p",
        "veth-pair=a=b", "action-script=/bin/true", "address=a", "port=1", "prev-images-dir=p", "libdir=l", "cpu-cap=fpu",
        "ext-mount-map=a:b", "manage-cgroups=ignore", "cgroup-root=/x", "inherit-fd=fd[3]:pipe:[4]", "feature=uffd",
        "skip-mnt=/m", "enable-fs=proc", "freeze-cgroup=/c", "ghost-limit=2M", "irmap-scan-path=/p", "lsm-profile=a:b",
        "timeout=3", "external=mnt[a]:b", "empty-ns=net", "cgroup-props=x", "cgroup-props-file=f", "cgroup-dump-controller=c",
        "status-fd=9", "verbosity=4", "ps-socket=3", "config=/dev/null", "tls-cacert=a", "tls-cacrl=a", "tls-cert=a",
        "tls-key=a", "cgroup-yard=y", "pre-dump-mode=read", "file-validation=filesize", "lsm-mount-context=c",
        "network-lock=skip", "ext-unix-sk=1",
    ];
    let bools = [
        "restore-detached", "restore-sibling", "daemon", "tcp-established", "log-pid", "evasive-devices", "link-remap",
        "shell-job", "file-locks", "page-server", "track-mem", "auto-dedup", "force-irmap", "extra", "experimental",
        "skip-in-flight", "deprecated", "display-stats", "weak-sysctls", "tcp-close", "stream", "tls", "skip-file-rwx-check",
        "mntns-compat-mode", "unprivileged", "ghost-fiemap", "allow-uprobes",
    ];
    let plain = [
        "leave-stopped", "leave-running", "exec-cmd", "enable-external-sharing", "enable-external-masters", "lazy-pages",
        "all", "no-default-config", "tls-no-cn-verify", "ext-unix-sk", "cpu-cap", "manage-cgroups",
    ];
    let mut args: Vec<String> = with_arg.iter().chain(&plain).map(|a| format!("--{a}")).collect();
    args.extend(bools.iter().flat_map(|b| [format!("--{b}"), format!("--no-{b}")]));
    args.push("dump".into());
    let (req, o) = parse(&args).unwrap();
    assert_eq!(req, Request::Run(Cmd::Dump));
    // Each kind of row reached Opts.
    assert_eq!(o.tree, Some(1));
    assert_eq!(o.action_scripts, [Path::new("/bin/true")]);
    assert_eq!(o.ghost_limit, Some(2 << 20));
    assert_eq!(o.ext_unix_sk, Some(vec![1]));
    assert!(o.refused.contains_key("join-ns") && !o.refused.contains_key("auto-dedup"), "{:?}", o.refused.keys());
    for s in "dSsRt:hD:o:v::x::Vr:jJ:lW:L:M:".chars().filter(|c| c.is_alphabetic()) {
        assert!(table::OPTIONS.iter().any(|o| o.short == Some(s)), "-{s}");
    }
}

#[test]
fn unsupported_options_are_refused_where_they_matter() {
    let (_, o) = run("restore --auto-dedup");
    assert_eq!(o.check_refused(Cmd::Restore).unwrap_err(), "not supported: --auto-dedup (criu-rs never rewrites images)");
    // Not where it does not matter, and not after --no-.
    o.check_refused(Cmd::Check).unwrap();
    run("restore --auto-dedup --no-auto-dedup").1.check_refused(Cmd::Restore).unwrap();
    assert!(run("dump -t 1 --stream").1.check_refused(Cmd::Dump).unwrap_err().contains("--stream"));
    assert!(run("restore -S").1.restore_sibling, "--restore-sibling is done (with -d)");
    assert!(run("page-server --port 1 --tls").1.check_refused(Cmd::PageServer).is_err());
    // Tuning options are accepted everywhere.
    for t in ["--log-pid", "--weak-sysctls", "--libdir=x", "--network-lock=skip", "--pre-dump-mode=read", "--unprivileged"] {
        run(&format!("restore {t}")).1.check_refused(Cmd::Restore).unwrap();
    }
}

#[test]
fn configuration_files() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.conf");
    std::fs::write(&conf, "# comment\ntcp-established\nverbosity 4\nlog-file \"my log\"\ntimeout 3 # comment\n").unwrap();
    let conf_s = conf.to_str().unwrap();
    let (_, o) = parse(&words(&format!("dump -t 1 --config {conf_s}"))).unwrap();
    assert!(o.tcp_established);
    assert_eq!((o.verbosity, o.timeout), (4, 3));
    assert_eq!(o.log_file.as_deref(), Some(Path::new("my log")));
    // The command line wins over the file.
    let (_, o) = parse(&words(&format!("dump -t 1 --config={conf_s} --no-tcp-established -v1"))).unwrap();
    assert!(!o.tcp_established);
    assert_eq!(o.verbosity, 1);
    // A named file must exist; commands are not options.
    assert!(parse(&words("dump -t 1 --config /nonexistent/c.conf")).unwrap_err().contains("/nonexistent/c.conf"));
    std::fs::write(&conf, "dump\n").unwrap();
    assert!(parse(&words(&format!("dump -t 1 --config {conf_s}"))).is_err());
    // --help still works with a broken file.
    assert!(matches!(parse(&words(&format!("dump --config {conf_s} --help"))).unwrap().0, Request::Print(_)));
}

#[test]
fn live_copy_is_on_unless_turned_off() {
    assert!(run("dump -t 1 -R").1.live_copy);
    assert!(!run("dump -t 1 -R --no-live-copy").1.live_copy);
    assert!(!run("pre-dump -t 1 --no-live-copy").1.live_copy);
}
