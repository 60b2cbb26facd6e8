//! Image kinds: their magic numbers (values from CRIU's `magic.h`) and file
//! names (CRIU's naming, `<name>.img`).

/// First word of every regular image (CRIU's `IMG_COMMON_MAGIC`).
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// First word of service images such as `stats-*.img` (`IMG_SERVICE_MAGIC`).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// The only word in the header of `inventory.img`.
pub const INVENTORY_MAGIC: u32 = 0x5831_3116;

/// What precedes the entries of an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// No header at all: raw bytes (`pages-N.img`).
    Raw,
    /// A single magic word (`inventory.img`).
    Single(u32),
    /// `IMG_COMMON_MAGIC` then the per-type magic.
    Common(u32),
    /// `IMG_SERVICE_MAGIC` then the per-type magic.
    Service(u32),
}

impl Header {
    /// The header bytes as written on disk.
    pub fn bytes(self) -> Vec<u8> {
        match self {
            Header::Raw => Vec::new(),
            Header::Single(m) => m.to_le_bytes().to_vec(),
            Header::Common(m) => [IMG_COMMON_MAGIC.to_le_bytes(), m.to_le_bytes()].concat(),
            Header::Service(m) => [IMG_SERVICE_MAGIC.to_le_bytes(), m.to_le_bytes()].concat(),
        }
    }
}

/// How the id part of a file name is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdFormat {
    /// One file per dump (`pstree.img`).
    None,
    /// One file per dump, without `.img` (CRIU's `stats-dump`).
    Bare,
    /// Decimal id (`core-1234.img`).
    Dec,
    /// Hexadecimal id (`ghost-file-1a.img`).
    Hex,
}

macro_rules! image_kinds {
    ($($(#[$doc:meta])* $kind:ident => $header:expr, $stem:literal, $id:ident, $entry:literal;)*) => {
        /// One kind of image file. Kinds marked "legacy" are no longer written
        /// by current CRIU (their data moved into `core`/`files`); they are
        /// listed so old images can still be recognised.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ImageKind {
            $($(#[$doc])* $kind,)*
        }

        impl ImageKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [ImageKind] = &[$(ImageKind::$kind,)*];

            /// The file header of this kind.
            pub fn header(self) -> Header {
                match self { $(ImageKind::$kind => $header,)* }
            }

            /// File-name stem (`core` in `core-1234.img`).
            pub fn stem(self) -> &'static str {
                match self { $(ImageKind::$kind => $stem,)* }
            }

            fn id_format(self) -> IdFormat {
                match self { $(ImageKind::$kind => IdFormat::$id,)* }
            }

            /// The protobuf message name of this kind's entries (the first
            /// entry's, for images mixing types), empty for raw images.
            pub fn entry_name(self) -> &'static str {
                match self { $(ImageKind::$kind => $entry,)* }
            }
        }
    };
}

use Header::{Common, Raw, Service, Single};

image_kinds! {
    /// `inventory.img`: one `inventory_entry`; written last by a dump.
    Inventory => Single(INVENTORY_MAGIC), "inventory", None, "inventory_entry";
    /// `pstree.img`: one `pstree_entry` per process.
    Pstree => Common(0x5027_3030), "pstree", None, "pstree_entry";
    /// `core-TID.img`: one `core_entry` per thread.
    Core => Common(0x5505_3847), "core", Dec, "core_entry";
    /// `ids-PID.img`: one `task_kobj_ids_entry`.
    Ids => Common(0x5443_2030), "ids", Dec, "task_kobj_ids_entry";
    /// `mm-PID.img`: one `mm_entry` (with its VMAs).
    Mm => Common(0x5749_2820), "mm", Dec, "mm_entry";
    /// `pagemap-PID.img`: `pagemap_head`, then `pagemap_entry` records.
    Pagemap => Common(0x5608_4025), "pagemap", Dec, "pagemap_head";
    /// `pagemap-shmem-SHMID.img`: as `Pagemap`, for shared anonymous memory.
    ShmemPagemap => Common(0x5608_4025), "pagemap-shmem", Dec, "pagemap_head";
    /// `pages-N.img`: raw page contents, no header.
    Pages => Raw, "pages", Dec, "";
    /// `fdinfo-FILES_ID.img`: one `fdinfo_entry` per descriptor.
    Fdinfo => Common(0x5621_3732), "fdinfo", Dec, "fdinfo_entry";
    /// `files.img`: one `file_entry` per open file description.
    Files => Common(0x5630_3138), "files", None, "file_entry";
    /// `fs-PID.img`: one `fs_entry`.
    Fs => Common(0x5140_3912), "fs", Dec, "fs_entry";
    /// `pipes-data.img`: `pipe_data_entry` each followed by `bytes` raw bytes.
    PipesData => Common(0x5645_3709), "pipes-data", None, "pipe_data_entry";
    /// `fifo-data.img`: as `PipesData`, for FIFOs.
    FifoData => Common(0x5933_3054), "fifo-data", None, "pipe_data_entry";
    /// `remap-fpath.img`: `remap_file_path_entry` records.
    RemapFpath => Common(0x5913_3954), "remap-fpath", None, "remap_file_path_entry";
    /// `ghost-file-ID.img` (hex id): `ghost_file_entry`, then the contents
    /// (raw, or `ghost_chunk_entry` + bytes pairs when `chunks` is set).
    GhostFile => Common(0x5258_3605), "ghost-file", Hex, "ghost_file_entry";
    /// `memfd.img`: one `memfd_inode_entry` per memfd inode (CRIU 4.x also
    /// writes shared anonymous memory this way, named `/dev/zero`); the
    /// contents are in `pagemap-shmem-SHMID.img`.
    MemfdInode => Common(0x4845_3499), "memfd", None, "memfd_inode_entry";
    /// `tty-info.img`: `tty_info_entry` records.
    TtyInfo => Common(0x5945_3036), "tty-info", None, "tty_info_entry";
    /// `tty-data.img`: `tty_data_entry` records.
    TtyData => Common(0x5941_3026), "tty-data", None, "tty_data_entry";
    /// `sk-queues.img`: `sk_packet_entry` each followed by `length` raw
    /// bytes: the receive queues of the dumped sockets, in queue order.
    SkQueues => Common(0x5626_4026), "sk-queues", None, "sk_packet_entry";
    /// `tcp-stream-INO.img` (hex socket inode): one `tcp_stream_entry`,
    /// then the receive queue's and the send queue's bytes.
    TcpStream => Common(0x5146_5506), "tcp-stream", Hex, "tcp_stream_entry";
    /// `filelocks.img`: `file_lock_entry` records.
    FileLocks => Common(0x5432_3616), "filelocks", None, "file_lock_entry";
    /// `eventpoll-tfd.img`: legacy epoll targets.
    EventpollTfd => Common(0x4443_3746), "eventpoll-tfd", None, "eventpoll_tfd_entry";
    /// `seccomp.img`: one `seccomp_entry` with every thread's filters.
    Seccomp => Common(0x6441_3049), "seccomp", None, "seccomp_entry";
    /// `stats-dump` (no `.img`, as CRIU names it): one `stats_entry`
    /// (service image), in the work directory.
    StatsDump => Service(0x5709_3306), "stats-dump", Bare, "stats_entry";
    /// `stats-restore`: one `stats_entry` (service image).
    StatsRestore => Service(0x5709_3306), "stats-restore", Bare, "stats_entry";
    /// `signal-s-PID.img`: legacy shared pending signals (`siginfo_entry`).
    Signal => Common(0x5925_5647), "signal-s", Dec, "siginfo_entry";
    /// `signal-p-TID.img`: legacy private pending signals (`siginfo_entry`).
    Psignal => Common(0x5925_5647), "signal-p", Dec, "siginfo_entry";
    /// `creds-PID.img`: legacy (creds now live in `thread_core_entry`).
    Creds => Common(0x5402_3547), "creds", Dec, "creds_entry";
    /// `sigacts-PID.img`: legacy (now `task_core_entry.sigactions`).
    Sigacts => Common(0x5534_4201), "sigacts", Dec, "sa_entry";
    /// `vmas-PID.img`: legacy (now `mm_entry.vmas`).
    Vmas => Common(0x5412_3737), "vmas", Dec, "vma_entry";
    /// `itimers-PID.img`: legacy (now `task_core_entry.timers`).
    Itimers => Common(0x5746_4056), "itimers", Dec, "itimer_entry";
    /// `posix-timers-PID.img`: legacy (now `task_core_entry.timers`).
    PosixTimers => Common(0x5260_3957), "posix-timers", Dec, "posix_timer_entry";
    /// `rlimit-PID.img`: legacy (now `task_core_entry.rlimits`).
    Rlimit => Common(0x5711_3925), "rlimit", Dec, "rlimit_entry";
    /// `reg-files.img`: legacy (now `file_entry.reg` in `files.img`).
    RegFiles => Common(0x5036_3636), "reg-files", None, "reg_file_entry";
    /// `pipes.img`: legacy (now `file_entry.pipe`).
    Pipes => Common(0x5651_3555), "pipes", None, "pipe_entry";
    /// `fifo.img`: legacy (now `file_entry.fifo`).
    Fifo => Common(0x5836_4939), "fifo", None, "fifo_entry";
    /// `tty.img`: legacy (now `file_entry.tty`).
    TtyFiles => Common(0x5943_3025), "tty", None, "tty_file_entry";
    /// `eventfd.img`: legacy (now `file_entry.efd`).
    EventfdFile => Common(0x4452_3722), "eventfd", None, "eventfd_file_entry";
    /// `eventpoll.img`: legacy (now `file_entry.epfd`).
    EventpollFile => Common(0x4502_3858), "eventpoll", None, "eventpoll_file_entry";
    /// `signalfd.img`: legacy (now `file_entry.sgfd`).
    Signalfd => Common(0x5732_3820), "signalfd", None, "signalfd_entry";
    /// `inetsk.img`: legacy (now `file_entry.isk`).
    InetSk => Common(0x5644_3851), "inetsk", None, "inet_sk_entry";
    /// `packetsk.img`: legacy (now `file_entry.psk`).
    PacketSk => Common(0x6045_4618), "packetsk", None, "packet_sock_entry";
    /// `netlinksk.img`: legacy (now `file_entry.nlsk`).
    NetlinkSk => Common(0x5800_5614), "netlinksk", None, "netlink_sk_entry";
    /// `timerfd.img`: legacy (now `file_entry.tfd`).
    Timerfd => Common(0x5049_3712), "timerfd", None, "timerfd_entry";
}

impl ImageKind {
    /// The per-type magic (for `Raw` kinds, 0 as in CRIU's `RAW_IMAGE_MAGIC`).
    pub fn magic(self) -> u32 {
        match self.header() {
            Header::Raw => 0,
            Header::Single(m) | Header::Common(m) | Header::Service(m) => m,
        }
    }

    /// Whether the file name carries an id (`core-<id>.img`).
    pub fn has_id(self) -> bool {
        self.id_format() != IdFormat::None
    }

    /// The file name of this kind for `id` (ignored by kinds without one),
    /// e.g. `core-1234.img`, `ghost-file-1f.img`, `files.img`.
    pub fn file_name(self, id: u64) -> String {
        match self.id_format() {
            IdFormat::None => format!("{}.img", self.stem()),
            IdFormat::Bare => self.stem().to_string(),
            IdFormat::Dec => format!("{}-{id}.img", self.stem()),
            IdFormat::Hex => format!("{}-{id:x}.img", self.stem()),
        }
    }

    /// The kinds whose header is `header` (several kinds can share a magic,
    /// e.g. `Pagemap` and `ShmemPagemap`).
    pub fn with_header(header: Header) -> impl Iterator<Item = ImageKind> {
        Self::ALL
            .iter()
            .copied()
            .filter(move |k| k.header() == header)
    }
}

impl ImageKind {
    /// Parses a file name such as `core-1234.img`, `ghost-file-1f.img` or
    /// `stats-dump` into its kind and id (0 for kinds without one).
    pub fn from_file_name(name: &str) -> Option<(ImageKind, u64)> {
        let base = name.strip_suffix(".img");
        let parse = |k: ImageKind| {
            if k.id_format() == IdFormat::Bare {
                return (name == k.stem()).then_some((k, 0));
            }
            let base = base?;
            let (digits, radix) = match k.id_format() {
                IdFormat::None => return (base == k.stem()).then_some((k, 0)),
                IdFormat::Bare => return None,
                IdFormat::Dec => (base.strip_prefix(k.stem())?.strip_prefix('-')?, 10),
                IdFormat::Hex => (base.strip_prefix(k.stem())?.strip_prefix('-')?, 16),
            };
            // from_str_radix would also take a sign.
            if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
                return None;
            }
            u64::from_str_radix(digits, radix).ok().map(|n| (k, n))
        };
        // The longest matching stem wins: `pagemap-shmem-5` is not
        // `pagemap` with id "shmem-5".
        Self::ALL
            .iter()
            .filter_map(|&k| parse(k))
            .max_by_key(|(k, _)| k.stem().len())
    }

    /// Identifies an image from its first 8 bytes (`head`, fewer if the
    /// file is shorter) and, where kinds share a magic, its file name.
    pub fn detect(file_name: &str, head: &[u8]) -> Option<ImageKind> {
        let word = |i: usize| {
            head.get(i..i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let header = match word(0)? {
            IMG_COMMON_MAGIC => Header::Common(word(4)?),
            IMG_SERVICE_MAGIC => Header::Service(word(4)?),
            m => Header::Single(m),
        };
        let by_name = Self::from_file_name(file_name).map(|(k, _)| k);
        let mut candidates = Self::with_header(header).peekable();
        let first = candidates.peek().copied();
        candidates.find(|k| Some(*k) == by_name).or(first)
    }
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id_format() {
            IdFormat::None => write!(f, "{}.img", self.stem()),
            _ => write!(f, "{}-*.img", self.stem()),
        }
    }
}
