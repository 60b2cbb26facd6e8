//! Per-task state that must come back exactly or be refused (issue 11),
//! checked from inside the restored programs:
//! - scheduling policy, priority and nice of every thread, `oom_score_adj`
//!   of every process and the membarrier registrations of every address
//!   space (tests/programs/schedstate.c), in CRIU's image fields;
//! - a thread stopped inside an rseq critical section resumes at its abort
//!   handler, as the kernel would have sent it (tests/programs/rseqcs.c),
//!   after a restore and when left running;
//! - SIGTRAP: its handler survives the dump's and the restore's traps, and
//!   a pending SIGTRAP is refused by name, the process running on with it
//!   (tests/programs/sigtrapst.c).
//!
//! Each program's checks also run once without any checkpoint, so that a
//! failure after a restore is the restore's.

mod common;

use common::*;

/// Starts `program DIR RESULT extra...`; returns it and its directories.
fn start(program: &str, name: &str, extra: &[&str]) -> (Program, Dirs) {
    let d = Dirs::new(name);
    let mut args: Vec<&std::path::Path> = vec![&d.work, &d.result];
    args.extend(extra.iter().map(std::path::Path::new));
    let p = Program::spawn(program, &args);
    (p, d)
}

/// Dumps `p`, restores it detached and runs its self-check.
fn dump_restore_trigger(p: &mut Program, d: &Dirs, also: &[i32]) -> String {
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    p.reap();
    for &other in also {
        wait_pid_gone(other);
    }
    let held = restore_detached(&d.images, pid);
    d.trigger(&held)
}

#[test]
fn schedstate_checks_pass_without_checkpoint() {
    let (p, d) = start("schedstate", "sched-live", &[]);
    wait_all_suspended(&[p.pid(), p.int("a")]);
    let held = Held::open(p.pid()).unwrap();
    assert_all_ok("schedstate without checkpoint", &d.trigger(&held));
}

/// Policies (OTHER, BATCH, IDLE, RR with RESET_ON_FORK, FIFO), priorities
/// and nice values per thread, oom_score_adj per process and membarrier
/// registrations per address space come back, written where CRIU writes
/// them.
#[test]
fn sched_oom_and_membarrier_come_back() {
    let (mut p, d) = start("schedstate", "sched", &[]);
    let (r, a) = (p.pid(), p.int("a"));
    wait_all_suspended(&[r, a]);
    let _a = Held::open(a).unwrap();
    let a_threads = threads_of(a);
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    // CRIU's fields, as crit reads them.
    let core = crit_decode(&d.images.join(format!("core-{a}.img")));
    let e = &core["entries"][0];
    assert_eq!(e["tc"]["oom_score_adj"].as_i64(), Some(700), "{e}");
    // (Debian's crit predates membarrier_registration_mask: read with ours.)
    let ours = criu_core::images::ImageDir::open(&d.images).unwrap().read_core(a as u64, true).unwrap();
    assert_eq!(ours.tc.and_then(|tc| tc.membarrier_registration_mask), Some(1 << 4));
    assert_eq!((jnum(&e["thread_core"]["sched_policy"]), jnum(&e["thread_core"]["sched_prio"])), (2 | 0x4000_0000, 3));
    let t = crit_decode(&d.images.join(format!("core-{}.img", a_threads[1])));
    assert_eq!((jnum(&t["entries"][0]["thread_core"]["sched_policy"]), jnum(&t["entries"][0]["thread_core"]["sched_prio"])), (1, 7));
    let core = crit_decode(&d.images.join(format!("core-{r}.img")));
    assert_eq!(core["entries"][0]["tc"]["oom_score_adj"].as_i64(), Some(300));
    assert_eq!(core["entries"][0]["thread_core"]["sched_nice"].as_i64(), Some(5));
    p.reap();
    drop(_a);
    wait_pid_gone(a);
    let held = restore_detached(&d.images, pid);
    let _a = Held::open(a).unwrap();
    assert_all_ok("schedstate restored", &d.trigger(&held));
}

/// rseqcs: T blocks in read() inside its critical section; the main thread
/// waits in sigsuspend.
fn start_rseqcs(name: &str) -> (Program, Dirs, i32, u64) {
    let (p, d) = start("rseqcs", name, &[]);
    let (t, abort) = (p.int("t"), p.num("abort"));
    wait_until("T in read, main thread in sigsuspend", PATIENCE, || {
        blocked_in(p.pid(), t) == Some(0) && blocked_in(p.pid(), p.pid()) == Some(NR_RT_SIGSUSPEND)
    });
    (p, d, t, abort)
}

#[test]
fn rseq_checks_pass_without_checkpoint() {
    let (p, d, ..) = start_rseqcs("rseq-live");
    let held = Held::open(p.pid()).unwrap();
    assert_all_ok("rseqcs without checkpoint", &d.trigger(&held));
}

/// A thread dumped inside an rseq critical section is dumped at its abort
/// handler (its instruction pointer in the image is the abort address, as
/// CRIU fixes it up), and the restored thread leaves the section through
/// it instead of committing with its rseq_cs cleared.
#[test]
fn thread_inside_rseq_section_resumes_at_abort() {
    let (mut p, d, t, abort) = start_rseqcs("rseq");
    let pid = p.pid();
    dump_ok(pid, &d.images, &[]);
    let core = crit_decode(&d.images.join(format!("core-{t}.img")));
    assert_eq!(jnum(&core["entries"][0]["thread_info"]["gpregs"]["ip"]), abort, "T's ip in the image");
    let rseq = &core["entries"][0]["thread_core"]["rseq_entry"];
    assert!(jnum(&rseq["rseq_abi_pointer"]) != 0, "rseq registration dumped: {rseq}");
    p.reap();
    let held = restore_detached(&d.images, pid);
    let report = d.trigger(&held);
    assert_all_ok("rseqcs restored", &report);
    assert!(report.contains("T aborted"), "{report}");
}

/// With --leave-running the thread goes on from the abort handler too.
#[test]
fn thread_inside_rseq_section_left_running_aborts() {
    let (p, d, ..) = start_rseqcs("rseq-running");
    let held = Held::open(p.pid()).unwrap();
    dump_ok(p.pid(), &d.images, &["-R"]);
    let report = d.trigger(&held);
    assert_all_ok("rseqcs left running", &report);
    assert!(report.contains("T aborted"), "{report}");
}

fn start_sigtrap(name: &str, mode: &str) -> (Program, Dirs) {
    let (p, d) = start("sigtrapst", name, &[mode]);
    wait_all_suspended(&[p.pid()]);
    (p, d)
}

#[test]
fn sigtrap_checks_pass_without_checkpoint() {
    for mode in ["handler", "pending"] {
        let (p, d) = start_sigtrap(&format!("sigtrap-live-{mode}"), mode);
        let held = Held::open(p.pid()).unwrap();
        assert_all_ok(&format!("sigtrapst {mode} without checkpoint"), &d.trigger(&held));
    }
}

/// A SIGTRAP handler (with its flags and mask) and a thread's blocked
/// SIGTRAP survive the dump and the restore, both of which end calls they
/// run in the task with a forced trap.
#[test]
fn sigtrap_handler_comes_back() {
    let (mut p, d) = start_sigtrap("sigtrap", "handler");
    assert_all_ok("sigtrapst restored", &dump_restore_trigger(&mut p, &d, &[]));
}

/// A pending SIGTRAP is refused by name before anything runs in the
/// process, which goes on with its signal still pending.
#[test]
fn pending_sigtrap_is_refused_and_kept() {
    let (p, d) = start_sigtrap("sigtrap-pending", "pending");
    let held = Held::open(p.pid()).unwrap();
    let out = dump(p.pid(), &d.images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dump should refuse a pending SIGTRAP");
    assert!(err.contains("unsupported: a pending SIGTRAP"), "{err}");
    assert!(!d.images.join("inventory.img").exists());
    assert_all_ok("sigtrapst after a refused dump", &d.trigger(&held));
}
