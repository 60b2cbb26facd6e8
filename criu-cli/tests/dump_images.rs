//! Dumps the `dumpee` test program and checks every image with Debian's
//! `crit decode` (`--pretty` is checked to work too), field by field: registers the program put in place,
//! memory contents at the offsets the pagemap gives, files, signals, timers.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const GP_VALS: [u64; 4] = [0x1111222233334444, 0x5555666677778888, 0x99990000aaaabbbb, 0xccccddddeeeeffff];
const PAGE: u64 = 4096;

fn pattern(page: u64, word: u64) -> u64 {
    0x5eed000000000000 ^ (page << 20) ^ word.wrapping_mul(0x9e3779b97f4a7c15)
}

fn entries(dir: &Path, name: &str) -> Vec<Value> {
    crit_decode(&dir.join(name))["entries"].as_array().unwrap().clone()
}

fn b64(s: &str) -> Vec<u8> {
    // crit prints bytes fields as base64 with newlines.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        acc = acc << 6 | T.iter().position(|t| *t == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// `PE_PRESENT` and `PE_LAZY`.
const PRESENT: u64 = 4;
const LAZY: u64 = 2;

/// (vaddr, nr_pages, offset in the pages image, flags) for each entry of a
/// pagemap; every entry has its data (`PE_PRESENT`), some are `PE_LAZY` too.
fn pagemap(dir: &Path, name: &str) -> (u64, Vec<(u64, u64, u64, u64)>) {
    let e = entries(dir, name);
    let pages_id = jnum(&e[0]["pages_id"]);
    let mut off = 0;
    let runs = e[1..]
        .iter()
        .map(|x| {
            let n = jnum(&x["nr_pages"]);
            let flags = jnum(&x["flags"]);
            assert!(flags == PRESENT || flags == PRESENT | LAZY, "flags {flags:#x}");
            let r = (jnum(&x["vaddr"]), n, off, flags);
            off += n * PAGE;
            r
        })
        .collect();
    (pages_id, runs)
}

/// The flags of the entry holding `addr`.
fn flags_at(runs: &[(u64, u64, u64, u64)], addr: u64) -> Option<u64> {
    runs.iter().find(|r| addr >= r.0 && addr < r.0 + r.1 * PAGE).map(|r| r.3)
}

fn find_page(runs: &[(u64, u64, u64, u64)], addr: u64) -> Option<u64> {
    runs.iter().find(|r| addr >= r.0 && addr < r.0 + r.1 * PAGE).map(|r| r.2 + (addr - r.0))
}

#[test]
fn images_hold_what_the_program_set_up() {
    let exe = compile("dumpee");
    let tmp = scratch("images-files");
    // 80 MiB: several read batches, written by concurrent writers.
    let mut p = Program::start(&exe, &["80", "2", tmp.to_str().unwrap()]);
    // READY comes before the leader loads r12..r15/ymm and enters read(2).
    wait_all_in_read(p.pid());
    let dir = scratch("images");
    let out = dump(p.pid(), &dir, &["-R", "-j", "-v4", "-o", "dump.log"]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.finish().trim(), "OK");
    let pid = p.pid() as u64;

    // crit must decode every image.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| (n.ends_with(".img") || n.starts_with("stats-")) && !n.starts_with("pages-"))
        .collect();
    names.sort();
    for n in &names {
        crit_decode(&dir.join(n));
        let pretty = std::process::Command::new("crit").args(["decode", "--pretty", "-i"]).arg(dir.join(n)).output().unwrap();
        assert!(pretty.status.success(), "crit decode --pretty {n}");
    }
    for want in ["inventory.img", "pstree.img", "files.img", "stats-dump", "remap-fpath.img", "pipes-data.img"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }

    // The restore side's own readers accept the set (inventory, cores,
    // VMA layout, pagemap entries inside the VMAs).
    let images = criu_core::images::ImageDir::open(&dir).expect("complete image set");
    let mm_e = images.read_mm(pid).expect("mm layout");
    images.read_pagemap(pid, &mm_e).expect("pagemap within the VMAs");
    images.read_core(pid, true).expect("leader core");

    // Process tree: one process, three threads.
    let ps = entries(&dir, "pstree.img");
    assert_eq!(ps.len(), 1);
    assert_eq!(jnum(&ps[0]["pid"]), pid);
    let tids: Vec<u64> = ps[0]["threads"].as_array().unwrap().iter().map(jnum).collect();
    assert_eq!(tids.len(), 3);
    assert_eq!(tids[0], pid);
    for &t in &tids[1..] {
        images.read_core(t, false).expect("thread core");
    }

    // Leader registers: r12..r15 and ymm0/ymm1 as set by the inline asm.
    let core = &entries(&dir, &format!("core-{pid}.img"))[0];
    let gp = &core["thread_info"]["gpregs"];
    for (i, name) in ["r12", "r13", "r14", "r15"].iter().enumerate() {
        assert_eq!(jnum(&gp[name]), GP_VALS[i], "{name}");
    }
    assert_eq!(jnum(&gp["orig_ax"]), 0, "interrupted in read(2)");
    let ymm: Vec<u8> = (0..64).map(|i| (i * 3 + 1) as u8).collect();
    let fp = &core["thread_info"]["fpregs"];
    let words = |v: &Value| -> Vec<u8> { v.as_array().unwrap().iter().flat_map(|w| (jnum(w) as u32).to_le_bytes()).collect() };
    let xmm = words(&fp["xmm_space"]);
    assert_eq!(&xmm[0..16], &ymm[0..16], "xmm0");
    assert_eq!(&xmm[16..32], &ymm[32..48], "xmm1");
    let ymmh = words(&fp["xsave"]["ymmh_space"]);
    assert_eq!(&ymmh[0..16], &ymm[16..32], "ymm0 upper half");
    assert_eq!(&ymmh[16..32], &ymm[48..64], "ymm1 upper half");

    // Task core: signals, timers, limits.
    let tc = &core["tc"];
    assert_eq!(tc["comm"], "dumpee");
    let blk = jnum(&tc["blk_sigset"]);
    assert_ne!(blk & (1 << (12 - 1)), 0, "SIGUSR2 blocked");
    assert_ne!(blk & (1 << (35 - 1)), 0, "SIGRTMIN+1 blocked");
    let sa = tc["sigactions"].as_array().unwrap();
    assert_eq!(sa.len(), 62);
    // Index of signal s once SIGKILL (9) and SIGSTOP (19) are left out.
    let idx = |s: usize| s - 1 - (s > 9) as usize - (s > 19) as usize;
    let usr1 = &sa[idx(10)];
    assert!(jnum(&usr1["sigaction"]) > 1, "SIGUSR1 has a handler");
    let fl = jnum(&usr1["flags"]);
    assert_eq!(fl & (libc::SA_SIGINFO | libc::SA_RESTART) as u64, (libc::SA_SIGINFO | libc::SA_RESTART) as u64);
    assert_eq!(jnum(&usr1["mask"]), 1 << (12 - 1), "SIGUSR2 in the handler mask");
    assert_eq!(jnum(&sa[idx(13)]["sigaction"]), 1, "SIGPIPE ignored");
    assert_eq!(jnum(&sa[idx(2)]["sigaction"]), 0, "SIGINT default");
    let shared = tc["signals_s"]["signals"].as_array().unwrap();
    assert_eq!(shared.len(), 1);
    let si = b64(shared[0]["siginfo"].as_str().unwrap());
    assert_eq!(si.len(), 128);
    assert_eq!(i32::from_le_bytes(si[0..4].try_into().unwrap()), 35, "si_signo");
    assert_eq!(i32::from_le_bytes(si[8..12].try_into().unwrap()), -1, "si_code SI_QUEUE");
    assert_eq!(i32::from_le_bytes(si[24..28].try_into().unwrap()), 0x1234, "si_value");
    let real = &tc["timers"]["real"];
    assert_eq!(jnum(&real["isec"]), 500);
    assert!((900..=1000).contains(&jnum(&real["vsec"])));
    assert_eq!(tc["rlimits"]["rlimits"].as_array().unwrap().len(), 16);

    // Thread core of the leader: private pending SIGUSR2, sigaltstack.
    let th = &core["thread_core"];
    let private = th["signals_p"]["signals"].as_array().unwrap();
    assert_eq!(private.len(), 1);
    assert_eq!(b64(private[0]["siginfo"].as_str().unwrap())[0], 12);
    assert_eq!(jnum(&th["sas"]["ss_sp"]), p.num("altstack"));
    assert_eq!(jnum(&th["sas"]["ss_size"]), 65536);
    assert_eq!(jnum(&th["creds"]["uid"]), 0);
    assert_eq!(jnum(&th["creds"]["egid"]), 0);

    // Other threads: their own r12 and names.
    let mut seen = Vec::new();
    for &t in &tids[1..] {
        let c = &entries(&dir, &format!("core-{t}.img"))[0];
        assert!(c.get("tc").is_none(), "task_core only in the leader");
        let r12 = jnum(&c["thread_info"]["gpregs"]["r12"]);
        assert_eq!(r12 >> 56, 0x77);
        let n = r12 & 0xff;
        assert_eq!(c["thread_core"]["comm"], format!("worker-{n}"));
        let egid = jnum(&c["thread_core"]["creds"]["egid"]);
        assert_eq!(egid, if n == 2 { 4321 } else { 0 }, "per-thread credentials of worker-{n}");
        seen.push(n);
    }
    seen.sort();
    assert_eq!(seen, vec![1, 2]);

    // Memory: the pattern at the offsets the pagemap gives; untouched and
    // zero-filled pages left out.
    let (pages_id, runs) = pagemap(&dir, &format!("pagemap-{pid}.img"));
    assert_eq!(pages_id, 1);
    let pages = std::fs::read(dir.join("pages-1.img")).unwrap();
    assert_eq!(pages.len() as u64, runs.iter().map(|r| r.1).sum::<u64>() * PAGE);
    let mem = p.num("mem");
    for pg in 0..p.num("pages") {
        let at = find_page(&runs, mem + pg * PAGE);
        if pg % 7 == 3 || pg % 11 == 5 {
            assert_eq!(at, None, "page {pg} is untouched or zero and must not be dumped");
            continue;
        }
        let off = at.unwrap_or_else(|| panic!("page {pg} not dumped")) as usize;
        for w in 0..PAGE / 8 {
            let o = off + w as usize * 8;
            let v = u64::from_le_bytes(pages[o..o + 8].try_into().unwrap());
            assert_eq!(v, pattern(pg, w), "page {pg} word {w}");
        }
    }

    // As CRIU, the private anonymous pages are flagged lazy (with their
    // data) but for the page each thread's stack pointer is in.
    for pg in (0..p.num("pages")).filter(|pg| !(pg % 7 == 3 || pg % 11 == 5)) {
        assert_eq!(flags_at(&runs, mem + pg * PAGE), Some(PRESENT | LAZY), "page {pg}");
    }
    for &t in &tids {
        let sp = jnum(&entries(&dir, &format!("core-{t}.img"))[0]["thread_info"]["gpregs"]["sp"]);
        assert_eq!(flags_at(&runs, sp & !(PAGE - 1)), Some(PRESENT), "the stack-pointer page of {t} is eager");
    }

    // VMAs and mm fields.
    let mm = &entries(&dir, &format!("mm-{pid}.img"))[0];
    let vmas = mm["vmas"].as_array().unwrap();
    let vma_at = |a: u64| vmas.iter().find(|v| jnum(&v["start"]) <= a && a < jnum(&v["end"])).unwrap();
    let mv = vma_at(mem);
    assert_eq!(jnum(&mv["status"]) & (1 | 1 << 9), 1 | 1 << 9, "regular anonymous private");
    assert!(vmas.iter().any(|v| jnum(&v["status"]) & 2 != 0 && jnum(&v["flags"]) & 0x100 != 0), "a grows-down stack");
    let shm = vma_at(p.num("shm"));
    assert_ne!(jnum(&shm["status"]) & (1 << 8), 0, "anonymous shared");
    assert!(jnum(&mm["mm_brk"]) >= jnum(&mm["mm_start_brk"]));
    assert!(jnum(&mm["mm_start_code"]) < jnum(&mm["mm_end_code"]));
    let auxv: Vec<u64> = mm["mm_saved_auxv"].as_array().unwrap().iter().map(jnum).collect();
    assert!(auxv.chunks(2).any(|kv| kv == [6, 4096]), "AT_PAGESZ in auxv");

    // Private file mappings: the program's text (never written) is left to
    // the file; its written data page (ymm_in) is dumped with its bytes.
    let text = vma_at(jnum(&mm["mm_start_code"]));
    assert_ne!(jnum(&text["status"]) & (1 << 6), 0, "text is a private file mapping");
    let (ts, te) = (jnum(&text["start"]), jnum(&text["end"]));
    assert!(runs.iter().all(|r| r.0 + r.1 * PAGE <= ts || r.0 >= te), "unmodified text pages must not be dumped");
    let ymm_addr = p.num("ymm");
    let off = find_page(&runs, ymm_addr & !(PAGE - 1)).expect("written data page dumped") as usize + (ymm_addr % PAGE) as usize;
    assert_eq!(flags_at(&runs, ymm_addr), Some(PRESENT), "a private file page is never lazy");
    assert_eq!(&pages[off..off + 64], &ymm[..], "ymm_in in the data page");

    // A 64 GiB sparse area: exactly its two written pages.
    let sparse = p.num("sparse");
    let sv = vma_at(sparse);
    let in_sparse: Vec<_> = runs.iter().filter(|r| r.0 >= jnum(&sv["start"]) && r.0 < jnum(&sv["end"])).map(|r| (r.0, r.1)).collect();
    assert_eq!(in_sparse, vec![(sparse, 1), (sparse + (32 << 30), 1)]);
    for (addr, text) in [(sparse, &b"sparse start"[..]), (sparse + (32 << 30), b"sparse middle")] {
        let off = find_page(&runs, addr).unwrap() as usize;
        assert_eq!(&pages[off..off + text.len()], text);
    }

    // Special pages: PROT_NONE data (read through /proc/PID/mem), mlock, MADV_DONTFORK.
    let special = p.num("special");
    let none = vma_at(special);
    assert_eq!(jnum(&none["prot"]), 0, "PROT_NONE area");
    let off = find_page(&runs, special).expect("PROT_NONE page with data dumped") as usize;
    assert!(pages[off..off + PAGE as usize].iter().all(|b| *b == 0xa5));
    assert_ne!(jnum(&vma_at(special + PAGE)["flags"]) & libc::MAP_LOCKED as u64, 0, "mlock'ed area");
    let dontfork = vma_at(special + 2 * PAGE);
    assert_ne!(jnum(dontfork.get("madv").unwrap_or(&Value::from(0))) & (1 << libc::MADV_DONTFORK), 0, "MADV_DONTFORK");

    // Shared memory: pages 0 and 2 only.
    let shmid = jnum(&shm["shmid"]);
    let (sh_pages, sh_runs) = pagemap(&dir, &format!("pagemap-shmem-{shmid}.img"));
    assert_eq!(sh_runs.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), vec![(0, 1), (2 * PAGE, 1)]);
    assert!(sh_runs.iter().all(|r| r.3 == PRESENT), "shared memory is never lazy");
    let sp = std::fs::read(dir.join(format!("pages-{sh_pages}.img"))).unwrap();
    assert!(sp.starts_with(b"shared page 0"));
    assert!(sp[PAGE as usize..].starts_with(b"shared page 2"));

    // Files.
    let files: HashMap<u64, Value> = entries(&dir, "files.img").into_iter().map(|f| (jnum(&f["id"]), f)).collect();
    let fdinfo: HashMap<u64, Value> =
        entries(&dir, &format!("fdinfo-{pid}.img")).into_iter().map(|f| (jnum(&f["fd"]), f)).collect();
    let file_of = |fd: u64| &files[&jnum(&fdinfo[&fd]["id"])];
    let reg = file_of(p.num("reg"));
    assert_eq!(fdinfo[&p.num("reg")]["id"], fdinfo[&p.num("dup")]["id"], "dup shares the description");
    assert_eq!(jnum(&reg["reg"]["pos"]), 5);
    assert!(reg["reg"]["name"].as_str().unwrap().ends_with("/dumpee-reg"));
    assert_eq!(jnum(&reg["reg"]["flags"]) & libc::O_ACCMODE as u64, libc::O_RDWR as u64);
    assert_eq!(jnum(&reg["reg"]["size"]), 16);
    let app = file_of(p.num("app"));
    assert_ne!(jnum(&app["reg"]["flags"]) & libc::O_APPEND as u64, 0);
    assert_eq!(jnum(&app["reg"]["flags"]) & libc::O_CLOEXEC as u64, 0, "O_CLOEXEC belongs to the fd");
    assert_eq!(jnum(&fdinfo[&p.num("app")]["flags"]), 1, "FD_CLOEXEC");
    assert_eq!(jnum(&fdinfo[&p.num("reg")]["flags"]), 0);
    assert_eq!(file_of(p.num("devnull"))["reg"]["name"], "/dev/null");
    let ghost = file_of(p.num("ghost"));
    let ghost_id = jnum(&ghost["id"]);
    // As CRIU without a dumped mount namespace: CRIU's restore would link the
    // ghost back through the mount this id names, in a tree it does not have.
    assert!(ghost["reg"].get("mnt_id").is_none() && reg["reg"].get("mnt_id").is_none(), "no mnt_id: {ghost}");
    let remap = entries(&dir, "remap-fpath.img");
    let r = remap.iter().find(|r| jnum(&r["orig_id"]) == ghost_id).expect("ghost remap");
    assert_eq!(r["remap_type"], "GHOST");
    let g = &entries(&dir, &format!("ghost-file-{:x}.img", jnum(&r["remap_id"])))[0];
    assert!(g.get("size").is_none() && g.get("chunks").is_none(), "a small ghost is raw, without a size, as CRIU writes it: {g}");
    assert_eq!(b64(g["extra"].as_str().unwrap()), b"ghost contents");
    let pr = file_of(p.num("pipe_r"));
    let pw = file_of(p.num("pipe_w"));
    assert_eq!(pr["type"], "PIPE");
    assert_eq!(pr["pipe"]["pipe_id"], pw["pipe"]["pipe_id"]);
    let pipe_id = jnum(&pr["pipe"]["pipe_id"]);
    let pd = entries(&dir, "pipes-data.img");
    let d = pd.iter().find(|d| jnum(&d["pipe_id"]) == pipe_id).expect("queued pipe data");
    assert_eq!(b64(d["extra"].as_str().unwrap()), b"queued bytes");
    // A mapped file unlinked and closed: its contents travel as a ghost.
    let mg = vma_at(p.num("mapghost"));
    let mg_id = jnum(&mg["shmid"]);
    assert!(files[&mg_id]["reg"]["name"].as_str().unwrap().ends_with("/dumpee-mapped"));
    let r = remap.iter().find(|r| jnum(&r["orig_id"]) == mg_id).expect("ghost remap of the mapped file");
    let g = &entries(&dir, &format!("ghost-file-{:x}.img", jnum(&r["remap_id"])))[0];
    assert_eq!(b64(g["extra"].as_str().unwrap()), b"mapped ghost");
    let exe_file = &files[&jnum(&mm["exe_file_id"])];
    assert_eq!(exe_file["reg"]["name"].as_str().unwrap(), exe.to_str().unwrap());
    let fs = &entries(&dir, &format!("fs-{pid}.img"))[0];
    assert_eq!(jnum(&fs["umask"]), 0o022);
    assert_eq!(files[&jnum(&fs["root_id"])]["reg"]["name"], "/");
    assert!(dir.join("dump.log").exists());
}

#[test]
fn fifo_and_posix_timer() {
    let exe = compile("dumpee");
    let tmp = scratch("fifo-timer-files");
    let mut p = Program::start(&exe, &["1", "0", tmp.to_str().unwrap()]);
    let dir = scratch("fifo-timer");
    let out = dump(p.pid(), &dir, &["-j"]);
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(p.child.wait().unwrap().signal(), Some(libc::SIGKILL), "killed after the dump");
    let pid = p.pid() as u64;

    let core = &entries(&dir, &format!("core-{pid}.img"))[0];
    let posix = core["tc"]["timers"]["posix"].as_array().unwrap();
    assert_eq!(posix.len(), 1);
    let t = &posix[0];
    assert_eq!(jnum(&t["si_signo"]), 36, "SIGRTMIN+2");
    assert_eq!(jnum(&t["sival_ptr"]), 0x5678);
    assert_eq!(jnum(&t["clock_id"]), libc::CLOCK_MONOTONIC as u64);
    assert_eq!(jnum(&t["it_sigev_notify"]), libc::SIGEV_SIGNAL as u64);
    assert_eq!(jnum(&t["isec"]), 700);
    assert!((2900..=3000).contains(&jnum(&t["vsec"])));

    let files: HashMap<u64, Value> = entries(&dir, "files.img").into_iter().map(|f| (jnum(&f["id"]), f)).collect();
    let fdinfo: HashMap<u64, Value> =
        entries(&dir, &format!("fdinfo-{pid}.img")).into_iter().map(|f| (jnum(&f["fd"]), f)).collect();
    let fifo = &files[&jnum(&fdinfo[&p.num("fifo")]["id"])];
    assert_eq!(fifo["type"], "FIFO");
    let reg = &files[&jnum(&fifo["fifo"]["regf_id"])];
    assert!(reg["reg"]["name"].as_str().unwrap().ends_with("/dumpee-fifo"));
    let pipe_id = jnum(&fifo["fifo"]["pipe_id"]);
    let data = entries(&dir, "fifo-data.img");
    let d = data.iter().find(|d| jnum(&d["pipe_id"]) == pipe_id).expect("fifo data");
    assert_eq!(b64(d["extra"].as_str().unwrap()), b"fifo bytes");
}
