//! `restore --inherit-fd fd[N]:KEY`, as runc and podman pass it: the
//! pipes and files a process had on its standard descriptors are, after
//! restore, the ones the restoring side hands over (`pipe:[INO]` with the
//! dumped pipe's inode, a file by its path without the leading `/`). A
//! shell loop reading stdin and answering on stdout and stderr shows from
//! outside which pipes and file it uses. CRIU's other keys: a unix socket
//! (`socket:[INO]`) and a file dumped as external (`file[MNT:INO]`).
//! Descriptors that are not open are refused before anything is made.

mod common;

use common::*;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A pipe: (read end, write end), close-on-exec.
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are fresh descriptors owned by nobody else.
    unsafe { (File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

/// One line (or "" at the end), waiting at most [`PATIENCE`] for it.
fn read_line(r: &mut BufReader<File>) -> String {
    if r.buffer().is_empty() {
        let mut p = libc::pollfd { fd: r.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one descriptor we own, for the deadline.
        let n = unsafe { libc::poll(&mut p, 1, PATIENCE.as_millis() as i32) };
        assert_eq!(n, 1, "no line within {PATIENCE:?}");
    }
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

/// `criu-rs restore -d -D DIR ARGS` with `fds[i]` as its descriptor 3 + i.
fn restore_with_fds(dir: &std::path::Path, fds: &[&File], args: &[String]) -> std::process::Output {
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = criu_rs();
    cmd.args(["restore", "-d", "-D", dir.to_str().unwrap()]).args(args);
    // SAFETY: only dup2 (async-signal-safe) between fork and exec; the
    // sources are above the targets' range or equal to them.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                let to = 3 + i as i32;
                // Through a high number first, so no source is overwritten.
                let tmp = libc::fcntl(fd, libc::F_DUPFD, 100 + i as i32);
                if tmp < 0 || libc::dup2(tmp, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    cmd.output().unwrap()
}

#[test]
fn pipes_and_a_file_are_inherited() {
    let dir = scratch("inherit");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let log1 = dir.join("stderr-before");
    let log2 = dir.join("stderr-after");
    let (in_r, mut in_w) = pipe();
    let (out_r, out_w) = pipe();
    let err = File::options().create(true).append(true).open(&log1).unwrap();
    let (in_ino, out_ino) = (in_r.metadata().unwrap().ino(), out_r.metadata().unwrap().ino());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done"]).stdin(in_r).stdout(out_w).stderr(err);
    let mut sh = Proc::from(in_own_session(&mut cmd).spawn().unwrap());
    let pid = sh.pid() as i32;
    let mut out_r = BufReader::new(out_r);
    writeln!(in_w, "one").unwrap();
    assert_eq!(read_line(&mut out_r), "got one\n");
    wait_state(pid, 'S');
    dump_ok(pid, &images, &[]);
    let st = sh.wait();
    assert!(!st.success(), "killed by the dump: {st}");

    // What the restoring side hands over.
    let (new_in_r, mut new_in_w) = pipe();
    let (new_out_r, new_out_w) = pipe();
    let new_err = File::options().create(true).append(true).open(&log2).unwrap();
    let log1_key = log1.to_str().unwrap().trim_start_matches('/').to_string();
    let args = [
        "--inherit-fd".to_string(),
        format!("fd[3]:pipe:[{in_ino}]"),
        "--inherit-fd".into(),
        format!("fd[4]:pipe:[{out_ino}]"),
        "--inherit-fd".into(),
        format!("fd[5]:{log1_key}"),
        "--pidfile".into(),
        dir.join("pid").to_str().unwrap().into(),
    ];
    let out = restore_with_fds(&images, &[&new_in_r, &new_out_w, &new_err], &args);
    let held = Held::open(pid);
    assert!(out.status.success(), "restore: {}", text(&out.stderr));
    let held = held.unwrap();
    // Only the restored shell holds the other ends now.
    drop((new_in_r, new_out_w, new_err));
    let mut new_out_r = BufReader::new(new_out_r);
    writeln!(new_in_w, "two").unwrap();
    assert_eq!(read_line(&mut new_out_r), "got two\n", "the answer comes on the inherited pipe");
    wait_until("the shell's stderr line", PATIENCE, || std::fs::read_to_string(&log2).unwrap().contains("err two"));
    assert_eq!(std::fs::read_to_string(&log1).unwrap(), "err one\n", "the dumped file is not written any more");
    // The old pipes are nobody's: nothing came on them.
    drop(in_w);
    drop(new_in_w);
    assert!(held.wait_exit(PATIENCE), "the shell did not end at the end of its input");
    assert_eq!(read_line(&mut new_out_r), "", "end of its output");
}

#[test]
fn closed_descriptors_are_refused() {
    let dir = scratch("inherit-refused");
    std::fs::write(dir.join("inventory.img"), b"").unwrap();
    let out = restore_with_fds(&dir, &[], &["--inherit-fd".into(), "fd[9]:pipe:[1234]".into()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--inherit-fd fd[9]:pipe:[1234]: fd 9"), "{}", text(&out.stderr));
}

/// A connected unix socket: (ours, the other end), close-on-exec.
fn socketpair() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors we then own.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh descriptors owned by nobody else.
    unsafe { (File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

/// The mount id of the file behind our descriptor (fdinfo's `mnt_id`).
fn mnt_id(f: &File) -> u64 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
    info.lines().find_map(|l| l.strip_prefix("mnt_id:")).unwrap().trim().parse().unwrap()
}

/// CRIU's keys for resources outside the dump: the shell's stdin and
/// stdout are one end of a unix socketpair whose other end is ours (its
/// peer is outside: dumped with `--external unix[INO]`), its stderr a file marked
/// `--external file[MNT:INO]`. Restored with `socket:[INO]` and
/// `file[MNT:INO]`, it talks on the socket and writes to the file handed over.
#[test]
fn a_socket_and_an_external_file_are_inherited() {
    let dir = scratch("inherit-sk");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (log1, log2) = (dir.join("stderr-before"), dir.join("stderr-after"));
    let (ours, theirs) = socketpair();
    let err = File::options().create(true).append(true).open(&log1).unwrap();
    let sk_ino = theirs.metadata().unwrap().ino();
    let file_key = format!("file[{:x}:{:x}]", mnt_id(&err), err.metadata().unwrap().ino());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done"]).stdin(theirs.try_clone().unwrap()).stdout(theirs).stderr(err);
    let mut sh = Proc::from(in_own_session(&mut cmd).spawn().unwrap());
    let pid = sh.pid() as i32;
    let mut ours_r = BufReader::new(ours.try_clone().unwrap());
    writeln!(&ours, "one").unwrap();
    assert_eq!(read_line(&mut ours_r), "got one\n");
    wait_state(pid, 'S');
    dump_ok(pid, &images, &["--external", &format!("unix[{sk_ino}]"), "--external", &file_key]);
    assert!(!sh.wait().success(), "killed by the dump");
    let files = crit_decode(&images.join("files.img"));
    let ext = files["entries"].as_array().unwrap().iter().find(|e| e["reg"]["name"] == file_key.as_str()).expect("the external file's entry");
    assert_eq!(ext["reg"]["ext"], true, "{ext}");
    assert!(std::fs::read(&log1).unwrap().ends_with(b"err one\n"));

    // Without the file: refused, naming the key.
    let out = restore_with_fds(&images, &[], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&format!("--inherit-fd fd[N]:{file_key}")), "{}", text(&out.stderr));

    let (new_ours, new_theirs) = socketpair();
    let new_err = File::options().create(true).append(true).open(&log2).unwrap();
    let args = ["--inherit-fd".to_string(), format!("fd[3]:socket:[{sk_ino}]"), "--inherit-fd".into(), format!("fd[4]:{file_key}")];
    let out = restore_with_fds(&images, &[&new_theirs, &new_err], &args);
    let held = Held::open(pid);
    assert!(out.status.success(), "restore: {}", text(&out.stderr));
    let held = held.unwrap();
    drop((new_theirs, new_err));
    let mut new_r = BufReader::new(new_ours.try_clone().unwrap());
    writeln!(&new_ours, "two").unwrap();
    assert_eq!(read_line(&mut new_r), "got two\n", "the answer comes on the inherited socket");
    wait_until("the shell's stderr line", PATIENCE, || std::fs::read_to_string(&log2).unwrap().contains("err two"));
    assert_eq!(std::fs::read_to_string(&log1).unwrap(), "err one\n", "the dumped file is not written any more");
    // Nothing comes on the old socket; the shell ends at the end of its input.
    drop(ours_r);
    drop(ours);
    rustix::net::shutdown(&new_ours, rustix::net::Shutdown::Write).unwrap();
    assert!(held.wait_exit(PATIENCE), "the shell did not end at the end of its input");
}
