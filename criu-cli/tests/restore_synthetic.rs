//! Restoring hand-built image sets: a tiny task whose code is a few bytes
//! (exit(42), or a spin loop), with files, a pipe, cwd and umask. Checks the
//! whole restore path (pid, fds, memory, blob, handshake, clean-up) from
//! outside through `/proc`, without depending on `criu-rs dump`.

mod common;

use common::*;

use criu_core::images::pb::FdTypes;
use std::os::unix::fs::OpenOptionsExt;

#[test]
fn restored_task_runs_and_its_exit_code_is_ours() {
    let dir = scratch("exit-42");
    let pid = free_pid();
    ImageSet::minimal(pid).write(&dir);
    let before = snapshot(&dir);
    let out = restore(&dir, &[]);
    assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));
    assert_eq!(before, snapshot(&dir), "restore changed the images");
}

#[test]
fn detached_task_has_its_pid_files_and_nothing_of_criu_rs() {
    let dir = scratch("detached");
    let pid = free_pid();
    let data = dir.join("data.txt");
    std::fs::write(&data, b"0123456789abcdef").unwrap();
    let log = dir.join("log.txt");
    std::fs::write(&log, b"xyz").unwrap();
    let cwd = dir.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut set = ImageSet::minimal(pid).with_code(&SPIN);
    set.files.push(reg_file(2, data.to_str().unwrap(), libc::O_RDWR as u32, Some(16)));
    set.files[1].reg.as_mut().unwrap().pos = Some(5);
    set.files.push(reg_file(3, log.to_str().unwrap(), (libc::O_WRONLY | libc::O_APPEND) as u32, Some(3)));
    set.files.push(reg_file(4, cwd.to_str().unwrap(), (libc::O_RDONLY | libc::O_DIRECTORY) as u32, None));
    set.files.push(pipe_file(5, 0x77, libc::O_RDONLY as u32));
    set.files.push(pipe_file(6, 0x77, (libc::O_WRONLY | libc::O_NONBLOCK) as u32));
    set.pipe_data.push((0x77, b"queued bytes".to_vec()));
    set.add_fd(0, 2, FdTypes::Reg, false);
    set.add_fd(7, 2, FdTypes::Reg, true); // dup of fd 0: same description
    set.add_fd(3, 3, FdTypes::Reg, false);
    set.add_fd(4, 5, FdTypes::Pipe, false);
    set.add_fd(5, 6, FdTypes::Pipe, true);
    set.cwd_id = 4;
    set.umask = 0o027;
    set.write(&dir);
    let before = snapshot(&dir);
    let pidfile = scratch("detached-pidfile").join("pidfile");
    let out = restore(&dir, &["-d", "--pidfile", pidfile.to_str().unwrap()]);
    let _guard = Held::open(pid).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), pid.to_string());
    assert!(alive(pid));

    // Memory: the dumped VMA plus the kernel's special areas, nothing else.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for line in maps.lines() {
        let ok = line.starts_with("00010000-00012000 rwxp")
            || ["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"].iter().any(|n| line.ends_with(n));
        assert!(ok, "unexpected mapping in the restored task: {line}\n{maps}");
    }

    // Files: exactly the dumped fds, with offsets, flags, sharing.
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    assert_eq!(fds, vec![0, 3, 4, 5, 7], "fd table");
    let link = |fd: i32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let info = |fd: i32| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let field = |fd: i32, key: &str| -> String {
        info(fd).lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).unwrap()
    };
    assert_eq!(link(0), data);
    assert_eq!(link(7), data);
    assert_eq!(field(0, "pos:"), "5");
    let flags = |fd: i32| u32::from_str_radix(&field(fd, "flags:"), 8).unwrap();
    assert_eq!(flags(0) & libc::O_CLOEXEC as u32, 0);
    assert_ne!(flags(7) & libc::O_CLOEXEC as u32, 0, "close-on-exec of fd 7");
    assert_eq!(flags(0) & libc::O_ACCMODE as u32, libc::O_RDWR as u32);
    assert_ne!(flags(3) & libc::O_APPEND as u32, 0, "O_APPEND of fd 3");
    assert_eq!(field(3, "pos:"), "0");
    // fd 0 and fd 7 share one description: same inode of the open file
    // ("ino" in fdinfo is the file's), and moving one moves the other, which
    // we check through kcmp.
    // SAFETY: kcmp(2) with plain integer arguments.
    let same = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0 /* KCMP_FILE */, 0, 7) };
    assert_eq!(same, 0, "fds 0 and 7 must share one open file description");
    // SAFETY: as above.
    let other = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0, 0, 3) };
    assert_ne!(other, 0);
    // The pipe: both ends, O_NONBLOCK on the write end, queued bytes there.
    let rd = link(4).to_string_lossy().into_owned();
    assert!(rd.starts_with("pipe:") && rd == link(5).to_string_lossy(), "{rd}");
    assert_ne!(flags(5) & libc::O_NONBLOCK as u32, 0);
    assert_eq!(flags(4) & libc::O_NONBLOCK as u32, 0);
    let mut buf = [0u8; 64];
    let rfd = std::fs::File::open(format!("/proc/{pid}/fd/4")).unwrap();
    use std::io::Read;
    let n = (&rfd).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"queued bytes");

    // fs context.
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), cwd);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "Umask:\t0027"), "{status}");
    assert_eq!(before, snapshot(&dir), "restore changed the images");
}

#[test]
fn unlinked_file_comes_back_unlinked_with_its_contents() {
    let dir = scratch("ghost");
    let pid = free_pid();
    let gone = dir.join("gone.txt");
    let mut set = ImageSet::minimal(pid).with_code(&SPIN);
    set.files.push(reg_file(2, gone.to_str().unwrap(), libc::O_RDONLY as u32, None));
    set.files[1].reg.as_mut().unwrap().pos = Some(4);
    set.add_fd(3, 2, FdTypes::Reg, false);
    set.ghosts.push((2, 9, b"ghost contents".to_vec()));
    set.write(&dir);
    let out = restore(&dir, &["-d"]);
    let _guard = Held::open(pid).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
    assert_eq!(link.to_string_lossy(), format!("{} (deleted)", gone.display()));
    assert!(!gone.exists(), "the ghost file must be unlinked again");
    let data = std::fs::read(format!("/proc/{pid}/fd/3")).unwrap();
    assert_eq!(data, b"ghost contents");
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
    assert!(info.starts_with("pos:\t4"), "{info}");
}

#[test]
fn task_dumped_stopped_comes_back_stopped() {
    let dir = scratch("stopped");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid).with_code(&SPIN);
    set.core.tc.as_mut().unwrap().task_state = Some(criu_core::images::consts::task_state::STOPPED);
    set.write(&dir);
    let out = restore(&dir, &["-d"]);
    let _guard = Held::open(pid).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_state(pid, 'T');
}

#[test]
fn shared_anonymous_memory_comes_back_shared_with_its_contents() {
    let dir = scratch("shmem");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid).with_code(&SPIN);
    let mut vma = anon_vma(0x40000, 0x43000);
    vma.flags = Some((libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u32);
    vma.status = Some(criu_core::images::consts::vma_status::AREA_REGULAR | criu_core::images::consts::vma_status::ANON_SHARED);
    vma.shmid = Some(0x1234);
    vma.prot = Some(3);
    set.mm.vmas.push(vma);
    let contents: Vec<u8> = (0..2 * 4096u32).map(|i| (i % 251) as u8).collect();
    set.shmem.push((0x1234, 2, contents.clone()));
    set.write(&dir);
    let out = restore(&dir, &["-d"]);
    let _guard = Held::open(pid).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps.lines().find(|l| l.starts_with("00040000-00043000")).unwrap_or_else(|| panic!("{maps}"));
    assert!(line.contains("rw-s") && line.contains("/dev/zero (deleted)"), "{line}");
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut got = vec![0u8; 3 * 4096];
    mem.read_exact_at(&mut got, 0x40000).unwrap();
    assert_eq!(&got[..contents.len()], &contents[..]);
    assert!(got[contents.len()..].iter().all(|&b| b == 0));
}

#[test]
fn fifo_ends_come_back_with_their_queued_bytes() {
    let dir = scratch("fifo");
    let pid = free_pid();
    let fifo = dir.join("the-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut set = ImageSet::minimal(pid).with_code(&SPIN);
    set.files.extend(fifo_files(2, 3, 0x99, fifo.to_str().unwrap(), libc::O_RDONLY as u32));
    set.files.extend(fifo_files(4, 5, 0x99, fifo.to_str().unwrap(), (libc::O_WRONLY | libc::O_NONBLOCK) as u32));
    set.fifo_data.push((0x99, b"fifo bytes".to_vec()));
    set.add_fd(3, 2, FdTypes::Fifo, false);
    set.add_fd(4, 4, FdTypes::Fifo, false);
    set.write(&dir);
    let out = restore(&dir, &["-d"]);
    let _guard = Held::open(pid).ok();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let flags = |fd: i32| {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
        let v = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim().to_string();
        u32::from_str_radix(&v, 8).unwrap()
    };
    assert_eq!(flags(3) & (libc::O_ACCMODE | libc::O_NONBLOCK) as u32, libc::O_RDONLY as u32);
    assert_eq!(flags(4) & (libc::O_ACCMODE | libc::O_NONBLOCK) as u32, (libc::O_WRONLY | libc::O_NONBLOCK) as u32);
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap(), fifo);
    let mut buf = [0u8; 32];
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(format!("/proc/{pid}/fd/3")).unwrap();
    let n = std::io::Read::read(&mut &f, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"fifo bytes");
}
