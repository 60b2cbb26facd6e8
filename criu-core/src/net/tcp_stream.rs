//! `tcp-stream-INO.img` (INO: the socket's inode in hex), the state of one
//! established TCP connection as CRIU writes it:
//!
//! ```text
//! | magic | len | tcp_stream_entry { inq_len, inq_seq, outq_len, outq_seq,
//! |       |     |   opt_mask, snd_wscale, mss_clamp, rcv_wscale?, timestamp?,
//! |       |     |   unsq_len, snd_wl1?, snd_wnd?, max_window?, rcv_wnd?, rcv_wup? }
//! | inq_len bytes: the receive queue | outq_len bytes: the send queue |
//! ```
//!
//! `rcv_wscale` is there when `opt_mask` has `TCPI_OPT_WSCALE`, `timestamp`
//! with `TCPI_OPT_TIMESTAMPS`, the window fields when the kernel gave them
//! (all five or none). [`read`] checks all of that, and that the queues are
//! exactly as long as the entry says.

use super::tcp_repair::{TcpStream, Window};
use crate::images::{pb, ImageDir, ImageError, ImageKind};
use linux_raw_sys::net as k;

/// Why a `tcp-stream` image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TcpStreamImageError {
    /// Reading or writing the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The entry contradicts itself.
    #[error("{path}: {problem}")]
    Bad {
        /// The image.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Writes `s`, the state of socket `ino` (in `state`, which the
/// `inet_sk_entry` keeps), as `tcp-stream-INO.img` in `dir`.
pub fn write(dir: &ImageDir, ino: u32, s: &TcpStream) -> Result<(), ImageError> {
    let wscale = s.opt_mask & k::TCPI_OPT_WSCALE != 0;
    let ts = s.opt_mask & k::TCPI_OPT_TIMESTAMPS != 0;
    let w = s.window;
    let e = pb::TcpStreamEntry {
        inq_len: Some(s.inq.len() as u32),
        inq_seq: Some(s.inq_seq),
        outq_len: Some(s.outq.len() as u32),
        outq_seq: Some(s.outq_seq),
        opt_mask: Some(s.opt_mask),
        snd_wscale: Some(if wscale { s.snd_wscale } else { 0 }),
        mss_clamp: Some(s.mss_clamp),
        rcv_wscale: wscale.then_some(s.rcv_wscale),
        timestamp: ts.then_some(s.timestamp),
        cork: None,
        nodelay: None,
        unsq_len: Some(s.unsq_len),
        snd_wl1: w.map(|w| w.snd_wl1),
        snd_wnd: w.map(|w| w.snd_wnd),
        max_window: w.map(|w| w.max_window),
        rcv_wnd: w.map(|w| w.rcv_wnd),
        rcv_wup: w.map(|w| w.rcv_wup),
    };
    let mut img = dir.create_image(ImageKind::TcpStream, ino as u64)?;
    img.write_entry(&e)?;
    img.write_raw(&s.inq)?;
    img.write_raw(&s.outq)?;
    img.finish()
}

/// Reads `tcp-stream-INO.img` of socket `ino`, whose `inet_sk_entry` says
/// it is in `state`.
pub fn read(dir: &ImageDir, ino: u32, state: u32) -> Result<TcpStream, TcpStreamImageError> {
    let path = dir.image_path(ImageKind::TcpStream, ino as u64);
    let bad = |problem: String| TcpStreamImageError::Bad { path: path.clone(), problem };
    let mut img = dir.open_image(ImageKind::TcpStream, ino as u64)?;
    let e: pb::TcpStreamEntry = img.read_next()?;
    let opt_mask = e.opt_mask.unwrap_or_default();
    let rcv_wscale = if opt_mask & k::TCPI_OPT_WSCALE != 0 {
        e.rcv_wscale.ok_or_else(|| bad("window scaling without rcv_wscale".into()))?
    } else {
        0
    };
    let snd_wscale = if opt_mask & k::TCPI_OPT_WSCALE != 0 { e.snd_wscale.unwrap_or_default() } else { 0 };
    // RFC 7323 caps the shift at 14.
    if snd_wscale > 14 || rcv_wscale > 14 {
        return Err(bad(format!("window scale {snd_wscale}/{rcv_wscale} above 14")));
    }
    let timestamp = if opt_mask & k::TCPI_OPT_TIMESTAMPS != 0 {
        e.timestamp.ok_or_else(|| bad("timestamps without a timestamp".into()))?
    } else {
        0
    };
    let unsq_len = e.unsq_len.ok_or_else(|| bad("no unsq_len".into()))?;
    let window = match (e.snd_wl1, e.snd_wnd, e.max_window, e.rcv_wnd, e.rcv_wup) {
        (Some(snd_wl1), Some(snd_wnd), Some(max_window), Some(rcv_wnd), Some(rcv_wup)) => Some(Window { snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup }),
        (None, None, None, None, None) => None,
        _ => return Err(bad("only some of the window fields".into())),
    };
    let (inq_len, outq_len) = (e.inq_len.unwrap_or_default() as u64, e.outq_len.unwrap_or_default() as u64);
    if unsq_len as u64 > outq_len {
        return Err(bad(format!("{unsq_len} unsent bytes in a send queue of {outq_len}")));
    }
    let inq = img.read_raw(inq_len)?;
    let outq = img.read_raw(outq_len)?;
    img.expect_eof("the send queue")?;
    Ok(TcpStream {
        state,
        inq_seq: e.inq_seq.unwrap_or_default(),
        outq_seq: e.outq_seq.unwrap_or_default(),
        unsq_len,
        opt_mask,
        snd_wscale,
        rcv_wscale,
        mss_clamp: e.mss_clamp.unwrap_or_default(),
        timestamp,
        window,
        inq,
        outq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageDir;

    fn stream() -> TcpStream {
        TcpStream {
            state: 1,
            inq_seq: 1000,
            outq_seq: 0xffff_fff0,
            unsq_len: 3,
            opt_mask: k::TCPI_OPT_WSCALE | k::TCPI_OPT_TIMESTAMPS | k::TCPI_OPT_SACK,
            snd_wscale: 7,
            rcv_wscale: 10,
            mss_clamp: 65483,
            timestamp: 123,
            window: Some(Window { snd_wl1: 1, snd_wnd: 2, max_window: 3, rcv_wnd: 4, rcv_wup: 5 }),
            inq: b"unread".to_vec(),
            outq: b"unacked+new".to_vec(),
        }
    }

    #[test]
    fn a_stream_round_trips_and_crit_reads_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::open_unchecked(tmp.path());
        write(&dir, 0x1913a, &stream()).unwrap();
        assert!(tmp.path().join("tcp-stream-1913a.img").exists());
        assert_eq!(read(&dir, 0x1913a, 1).unwrap(), stream());
        let out = std::process::Command::new("crit").args(["decode", "-i"]).arg(tmp.path().join("tcp-stream-1913a.img")).output();
        if let Ok(out) = out {
            assert!(out.status.success(), "crit: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("\"inq_len\": 6") && text.contains("\"unsq_len\": 3"), "{text}");
        }
    }

    #[test]
    fn inconsistent_streams_are_refused_with_the_image_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::open_unchecked(tmp.path());
        let mut s = stream();
        s.unsq_len = 50;
        write(&dir, 7, &s).unwrap();
        let e = read(&dir, 7, 1).unwrap_err().to_string();
        assert!(e.contains("tcp-stream-7.img") && e.contains("unsent"), "{e}");
        // A queue shorter than the entry says.
        write(&dir, 8, &stream()).unwrap();
        let p = tmp.path().join("tcp-stream-8.img");
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 2).unwrap();
        let e = read(&dir, 8, 1).unwrap_err().to_string();
        assert!(e.contains("tcp-stream-8.img"), "{e}");
        // Missing.
        let e = read(&dir, 9, 1).unwrap_err().to_string();
        assert!(e.contains("tcp-stream-9.img"), "{e}");
        // Trailing bytes.
        let p = tmp.path().join("tcp-stream-8.img");
        write(&dir, 8, &stream()).unwrap();
        std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&p).unwrap(), b"zz").unwrap();
        let e = read(&dir, 8, 1).unwrap_err().to_string();
        assert!(e.contains("tcp-stream-8.img"), "{e}");
    }
}
