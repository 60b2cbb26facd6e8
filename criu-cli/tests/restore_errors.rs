//! `criu-rs restore` on bad input: a clear error naming the problem (and
//! the image file), a non-zero exit, no process left, images untouched.

mod common;

use common::*;

use std::path::Path;

/// Restores `dir`, expects failure mentioning every `needle`, and checks
/// that nothing was created or changed.
fn expect_failure(dir: &Path, pid: i32, needles: &[&str]) -> String {
    let before = snapshot(dir);
    let out = restore(dir, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "restore succeeded on bad input: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
    assert!(!alive(pid), "a process with the dumped pid is left: {}", who_holds(pid));
    assert_eq!(before, snapshot(dir), "restore changed the images");
    err
}

#[test]
fn missing_directory() {
    let dir = scratch("missing").join("nope");
    let out = restore(&dir, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("nope") && err.contains("images directory"), "{err}");
    assert!(!dir.exists(), "restore created the directory");
}

#[test]
fn directory_without_inventory_is_an_incomplete_dump() {
    let dir = scratch("no-inventory");
    let pid = free_pid();
    ImageSet::minimal(pid).write(&dir);
    std::fs::remove_file(dir.join("inventory.img")).unwrap();
    expect_failure(&dir, pid, &["inventory.img", "not a complete dump"]);
}

#[test]
fn truncated_core_names_the_file() {
    let dir = scratch("truncated-core");
    let pid = free_pid();
    ImageSet::minimal(pid).write(&dir);
    let core = dir.join(format!("core-{pid}.img"));
    let bytes = std::fs::read(&core).unwrap();
    std::fs::write(&core, &bytes[..bytes.len() - 7]).unwrap();
    expect_failure(&dir, pid, &[&format!("core-{pid}.img"), "truncated"]);
}

#[test]
fn bad_magic_names_the_file() {
    let dir = scratch("bad-magic");
    let pid = free_pid();
    ImageSet::minimal(pid).write(&dir);
    let mm = dir.join(format!("mm-{pid}.img"));
    let mut bytes = std::fs::read(&mm).unwrap();
    bytes[4] ^= 0xff;
    std::fs::write(&mm, &bytes).unwrap();
    expect_failure(&dir, pid, &[&format!("mm-{pid}.img"), "magic"]);
}

#[test]
fn pagemap_past_the_pages_file() {
    let dir = scratch("short-pages");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid);
    set.pages.truncate(4096);
    set.write(&dir);
    expect_failure(&dir, pid, &["pages-1.img", "too short", &format!("pagemap-{pid}.img")]);
}

#[test]
fn pagemap_outside_the_vmas() {
    let dir = scratch("pagemap-outside");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid);
    set.pagemap[0].vaddr = Some(0x11000);
    set.write(&dir);
    expect_failure(&dir, pid, &[&format!("pagemap-{pid}.img"), "not inside the VMAs"]);
}

#[test]
fn overlapping_vmas() {
    let dir = scratch("overlap");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid);
    set.mm.vmas.push(anon_vma(0x11000, 0x13000));
    set.write(&dir);
    expect_failure(&dir, pid, &[&format!("mm-{pid}.img"), "overlaps"]);
}

#[test]
fn vma_outside_user_space() {
    let dir = scratch("vma-kernel");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid);
    set.mm.vmas.push(anon_vma(0xffff_8000_0000_0000, 0xffff_8000_0000_1000));
    set.write(&dir);
    expect_failure(&dir, pid, &[&format!("mm-{pid}.img"), "user address space"]);
}

#[test]
fn other_architecture() {
    let dir = scratch("aarch64");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid);
    set.core.mtype = Some(criu_core::images::pb::core_entry::March::Aarch64 as i32);
    set.write(&dir);
    expect_failure(&dir, pid, &[&format!("core-{pid}.img"), "not x86-64"]);
}

#[test]
fn required_field_missing() {
    let dir = scratch("required");
    let pid = free_pid();
    ImageSet::minimal(pid).write(&dir);
    // fs_entry with root_id missing, framed by hand (the writer refuses it).
    let msg: &[u8] = &[0x08, 0x01]; // field 1 (cwd_id) = 1
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0x5456_4319u32.to_le_bytes());
    bytes.extend_from_slice(&0x5140_3912u32.to_le_bytes());
    bytes.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    bytes.extend_from_slice(msg);
    std::fs::write(dir.join(format!("fs-{pid}.img")), bytes).unwrap();
    expect_failure(&dir, pid, &[&format!("fs-{pid}.img"), "root_id"]);
}

#[test]
fn changed_file_fails_after_the_task_exists_and_leaves_nothing() {
    let dir = scratch("changed-file");
    let pid = free_pid();
    let data = dir.join("data.txt");
    std::fs::write(&data, b"twenty bytes of text").unwrap();
    let mut set = ImageSet::minimal(pid);
    set.files.push(reg_file(2, data.to_str().unwrap(), libc::O_RDONLY as u32, Some(10)));
    set.fdinfo.push(criu_core::images::pb::FdinfoEntry {
        id: Some(2),
        flags: Some(0),
        r#type: Some(criu_core::images::pb::FdTypes::Reg as i32),
        fd: Some(5),
        ..Default::default()
    });
    set.write(&dir);
    expect_failure(&dir, pid, &["data.txt", "size changed", "10", "20"]);
}

#[test]
fn pid_in_use() {
    let dir = scratch("pid-in-use");
    let mut sleeper = std::process::Command::new("sleep").arg("100").spawn().unwrap();
    let pid = sleeper.id() as i32;
    ImageSet::minimal(pid).write(&dir);
    let before = snapshot(&dir);
    let out = restore(&dir, &[]);
    let err = text(&out.stderr);
    let still_there = alive(pid);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(!out.status.success());
    assert!(err.contains(&format!("pid {pid} is already in use")), "{err}");
    assert!(still_there, "restore touched the process holding the pid");
    assert_eq!(before, snapshot(&dir));
}

#[test]
fn failure_inside_the_blob_kills_the_task() {
    // Raising a hard rlimit needs CAP_SYS_RESOURCE, which criu-rs lacks
    // here: the blob refuses and exits; the task must not survive.
    let dir = scratch("blob-failure");
    let pid = free_pid();
    let mut set = ImageSet::minimal(pid);
    let mut limits = Vec::new();
    for res in 0..16 {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) into a local struct.
        unsafe { libc::getrlimit(res, &mut rl) };
        limits.push(criu_core::images::pb::RlimitEntry { cur: Some(rl.rlim_cur), max: Some(rl.rlim_max) });
    }
    let nofile = libc::RLIMIT_NOFILE as usize;
    limits[nofile].max = Some(limits[nofile].max.unwrap().saturating_mul(4).max(1 << 30));
    set.core.tc.as_mut().unwrap().rlimits = Some(criu_core::images::pb::TaskRlimitsEntry { rlimits: limits });
    set.write(&dir);
    let err = expect_failure(&dir, pid, &["restoring task", "blob failed"]);
    assert!(err.contains("rlimit") || err.contains("stage"), "{err}");
}
