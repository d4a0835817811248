//! System calls for code memory, and the one safe type built on them.
//!
//! Every `unsafe` block of the code-memory allocator lives here. The raw wrappers (`mmap`,
//! `mprotect`, `madvise`, `fallocate`, `munmap`, ...) are `unsafe fn`s whose `# Safety` sections
//! say what the caller must uphold, or safe functions that say why they need no such promise;
//! the callers are the methods of [`Pages`], whose type invariants uphold it, and the fork
//! handler at the end of this file. The allocator in [`crate::code_memory`] is written entirely
//! in safe code on top of [`Pages`].
//!
//! W^X is structural at this level: [`Prot`] has no read-write-execute value, so no call made
//! from this module can ever ask the kernel for a writable and executable page.
//!
//! **Shared memory and aliases.** A reservation is either private anonymous memory, or a view of
//! a memfd (an anonymous shared-memory file of the reservation's size, mapped `MAP_SHARED` from
//! offset 0). In the second case the same physical pages can be reached through a second
//! mapping of the file: [`Pages::store_live`] maps one page of it `rw-` somewhere else (an
//! *alias*), stores one aligned 8-byte word through it, and unmaps it, while the reservation's
//! own view keeps its protection (`r-x` for published code) the whole time. No writable view of
//! code outlives that call, and no mapping is ever both writable and executable.
//!
//! ```text
//!   reservation (view A, MAP_SHARED)       memfd (offset = address - base)       alias (view B)
//!   ┌────────────┬──────────┬──────┐       ┌────────────┬──────────┬──────┐     ┌──────────┐
//!   │ r-x  code  │ rw- data │ ---  │ ────> │ code pages │data pages│ hole │ <── │ rw- page │
//!   └────────────┴──────────┴──────┘       └────────────┴──────────┴──────┘     └──────────┘
//!                                                                        mapped for one store
//! ```
//!
//! Giving memory back: for private anonymous memory `MADV_DONTNEED` drops the pages; for a
//! shared file it only drops this process's page-table entries and the file keeps the memory, so
//! the pages of a memfd are released by punching a hole in the file
//! (`fallocate(FALLOC_FL_PUNCH_HOLE)`), which also makes them read as zeros again.
//!
//! **Fork.** A `MAP_SHARED` mapping stays shared across `fork`: a child that compiled or patched
//! code would write into its parent's code. A `pthread_atfork` child handler therefore gives the
//! child a copy of every shared reservation before `fork` returns there: the readable (committed)
//! pages are copied into a fresh memfd of the child's own, which is mapped `MAP_FIXED` over the
//! same addresses with the same protections, so the child keeps live patching. If the child
//! cannot get a memfd, its reservations become private anonymous copies instead (live patching
//! then fails with a typed error there); if even that fails, the child aborts rather than run on
//! memory it shares with its parent. `posix_spawn` and `vfork` run no atfork handlers and share
//! nothing that could be written, so they need none.

use std::cell::RefCell;
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Once, PoisonError, RwLock, RwLockWriteGuard, TryLockError, Weak};

use crate::maps::{self, Mapping};

/// The operating system's page size (4096 on x86-64 Linux), cached by `region`.
pub(crate) fn page_size() -> usize {
    region::page::size()
}

/// The protection of a range of pages.
///
/// There is deliberately no writable-and-executable value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Prot {
    /// `---`: reserved address space, no access (and, once decommitted, no memory).
    None,
    /// `r--`: read-only data.
    Read,
    /// `rw-`: being written (code before publication, or data).
    ReadWrite,
    /// `r-x`: published code.
    ReadExec,
}

impl Prot {
    fn bits(self) -> libc::c_int {
        match self {
            Prot::None => libc::PROT_NONE,
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Prot::ReadExec => libc::PROT_READ | libc::PROT_EXEC,
        }
    }

    /// The protection a mapping line shows, if it is one this module can set.
    fn of(mapping: &Mapping) -> Option<Prot> {
        let p = mapping.perms;
        match (p.read, p.write, p.execute) {
            (false, false, false) => Some(Prot::None),
            (true, false, false) => Some(Prot::Read),
            (true, true, false) => Some(Prot::ReadWrite),
            (true, false, true) => Some(Prot::ReadExec),
            _ => None,
        }
    }

    /// Whether loads from pages with this protection succeed.
    pub(crate) fn is_readable(self) -> bool {
        self != Prot::None
    }

    /// Whether stores to pages with this protection succeed.
    pub(crate) fn is_writable(self) -> bool {
        self == Prot::ReadWrite
    }
}

/// What backs a reservation's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Backing {
    /// Private anonymous memory: no other view of the pages can exist.
    Private,
    /// A memfd of the reservation's size, mapped shared: [`Pages::store_live`] can write the
    /// pages through a temporary alias.
    Shared,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(last_error()) }
}

/// Creates an anonymous shared-memory file (`memfd_create`, close-on-exec) of `len` bytes. The
/// file is sparse: it holds no memory until its pages are touched.
fn memfd(len: usize) -> io::Result<OwnedFd> {
    let name = c"uppercut-code";
    // Kernels since 6.3 let a memfd be created explicitly executable (`MFD_EXEC`), so that a
    // `vm.memfd_noexec` default does not apply to it; older kernels reject the flag.
    let mut fd = -1;
    for flags in [libc::MFD_CLOEXEC | libc::MFD_EXEC, libc::MFD_CLOEXEC] {
        // SAFETY: `name` is a NUL-terminated string; memfd_create only creates a new descriptor.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: `fd` was just returned by memfd_create: it is open and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: `fd` is a file this function owns; ftruncate only sets its size.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) })?;
    Ok(fd)
}

/// Maps `len` bytes with no access (`PROT_NONE`), not charged against swap (`MAP_NORESERVE`),
/// and returns its address: fresh private anonymous memory, or the memfd `file` from offset 0
/// (`MAP_SHARED`).
///
/// With `exact == false`, a non-zero `addr` is only a hint that the kernel may ignore. With
/// `exact == true` the mapping is placed at `addr` or not at all (`MAP_FIXED_NOREPLACE`): if
/// anything is mapped there the call fails with `EEXIST` (`io::ErrorKind::AlreadyExists`).
///
/// This function is safe: without `MAP_FIXED` the kernel never replaces an existing mapping, so
/// no memory that any code can reach changes, and the new mapping is inaccessible until its owner
/// changes its protection.
fn mmap_reserve(addr: usize, len: usize, exact: bool, file: Option<&OwnedFd>) -> io::Result<usize> {
    let (mut flags, fd) = match file {
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
    };
    flags |= libc::MAP_NORESERVE;
    if exact {
        flags |= libc::MAP_FIXED_NOREPLACE;
    }
    // SAFETY: a new mapping (anonymous, or of an open file the caller owns, from offset 0)
    // without MAP_FIXED: `addr` is a hint, or with MAP_FIXED_NOREPLACE a demand that fails rather
    // than replacing anything. No existing memory is touched; the result is checked below.
    let ptr = unsafe { libc::mmap(addr as *mut c_void, len, libc::PROT_NONE, flags, fd, 0) };
    if ptr == libc::MAP_FAILED {
        return Err(last_error());
    }
    let got = ptr as usize;
    if exact && got != addr {
        // A kernel older than 4.17 ignores MAP_FIXED_NOREPLACE and treats `addr` as a hint.
        // SAFETY: `[got, got + len)` is the mapping created just above; nothing refers to it.
        let _ = unsafe { munmap(got, len) };
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    Ok(got)
}

/// Changes the protection of `[addr, addr + len)` to `prot`.
///
/// # Safety
///
/// The range must be page-aligned, lie in a mapping this module created, and belong to the
/// caller alone. No Rust reference into the range may be live whose use the new protection
/// forbids (a `&[u8]` into pages made inaccessible, a `&mut [u8]` into pages made read-only).
unsafe fn mprotect(addr: usize, len: usize, prot: Prot) -> io::Result<()> {
    // SAFETY: the caller owns the range and holds no reference that the change invalidates; the
    // kernel validates alignment and that the range is mapped.
    check(unsafe { libc::mprotect(addr as *mut c_void, len, prot.bits()) })
}

/// Tells the kernel it may drop the pages of `[addr, addr + len)` (`MADV_DONTNEED`): their memory
/// is released at once, and a private anonymous page reads as zeros if it is ever touched again.
///
/// # Safety
///
/// The range must be page-aligned, lie in a private anonymous mapping this module created, and
/// belong to the caller alone; no reference into it may be live and nothing may rely on its
/// contents afterwards.
unsafe fn madvise_dontneed(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and nothing refers to or relies on its contents; for a
    // private anonymous mapping MADV_DONTNEED only replaces the contents with zero pages.
    check(unsafe { libc::madvise(addr as *mut c_void, len, libc::MADV_DONTNEED) })
}

/// Releases the memory of `[offset, offset + len)` of the file `fd` (`fallocate` with
/// `FALLOC_FL_PUNCH_HOLE`, keeping the file's size): every mapping of that part of the file
/// reads zeros from now on, and the memory is given back to the kernel.
///
/// # Safety
///
/// `fd` must be a memfd this module created and still owns, and the range of the file must
/// belong to the caller alone: no reference into any mapping of it may be live, and nothing may
/// rely on its contents afterwards.
unsafe fn punch_hole(fd: RawFd, offset: usize, len: usize) -> io::Result<()> {
    let (offset, len) = match (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(io::Error::from_raw_os_error(libc::EFBIG)),
    };
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: the caller owns that part of the file and nothing relies on its contents.
    check(unsafe { libc::fallocate(fd, mode, offset, len) })
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
///
/// The range must be a mapping this module created, and nothing may use any address of it
/// afterwards (no reference, no pointer that will be dereferenced, no code that will run there).
unsafe fn munmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is ours and dead.
    check(unsafe { libc::munmap(addr as *mut c_void, len) })
}

/// Counts the pages of `[addr, addr + len)` that are resident in memory (`mincore`).
///
/// `addr` must be page-aligned and the whole range mapped, or the kernel answers `EINVAL` or
/// `ENOMEM`. This only reads page tables: the memory of the range is not accessed. For a shared
/// mapping the kernel answers for the file's pages (whether the file holds them in memory),
/// whatever this process touched.
pub(crate) fn resident_pages(addr: usize, len: usize) -> io::Result<usize> {
    let pages = len.div_ceil(page_size());
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore writes one byte per page of the range into `vec`, which has exactly that
    // many bytes; it reads page tables only and never touches the range's memory.
    let rc = unsafe { libc::mincore(addr as *mut c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(last_error());
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count())
}

/// An anonymous shared-memory file (a memfd) to back a reservation ([`Pages::reserve_shared`]).
#[derive(Debug)]
pub(crate) struct SharedFile {
    fd: OwnedFd,
    len: usize,
}

impl SharedFile {
    /// Creates a memfd of `len` bytes (sparse: no memory until its pages are touched). Fails
    /// with the kernel's error: `EMFILE` and the like, or `EACCES` where `vm.memfd_noexec`
    /// forbids executable memfds.
    pub(crate) fn new(len: usize) -> io::Result<SharedFile> {
        Ok(SharedFile {
            fd: memfd(len)?,
            len,
        })
    }
}

/// A page of a memfd mapped `rw-` at an address the kernel chooses, unmapped when dropped.
struct Alias {
    addr: usize,
    len: usize,
}

impl Alias {
    /// Maps `[offset, offset + len)` of the file `fd` read-write and shared.
    ///
    /// This function is safe: without `MAP_FIXED` the new mapping replaces nothing, and the
    /// caller decides what is written through it (see [`Pages::store_live`]).
    fn map(fd: RawFd, offset: usize, len: usize) -> io::Result<Alias> {
        let offset =
            libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let prot = Prot::ReadWrite.bits();
        // MAP_POPULATE: the page is mapped by this call rather than by a fault on the store.
        // SAFETY: a new shared mapping of a file, placed where the kernel likes (no MAP_FIXED):
        // no existing memory changes. The result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_error());
        }
        Ok(Alias {
            addr: ptr as usize,
            len,
        })
    }
}

impl Drop for Alias {
    fn drop(&mut self) {
        // SAFETY: the alias is the mapping `map` made; no reference into it outlives the alias
        // (`store_live` only stores through a raw pointer while the alias is alive).
        let result = unsafe { munmap(self.addr, self.len) };
        debug_assert!(result.is_ok(), "munmap of an alias failed: {result:?}");
    }
}

/// One mapping made by [`mmap_reserve`], unmapped when the last [`Pages`] of it is dropped.
#[derive(Debug)]
struct Reservation {
    base: usize,
    len: usize,
    /// The memfd the mapping shows (offset 0 at `base`), owned by the reservation, or -1 for
    /// private anonymous memory. Changes only in a forked child, in [`Reservation::privatise`],
    /// while that child has a single thread.
    fd: AtomicI32,
    /// Whether the reservation is in the fork handler's registry ([`ARENAS`]): it was made
    /// shared.
    registered: bool,
}

impl Reservation {
    fn fd(&self) -> Option<RawFd> {
        let fd = self.fd.load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: every `Pages` of this reservation holds an `Arc` to it, so when this runs no
        // `Pages` (hence no reference handed out by one) is left; the range is ours and dead.
        let result = unsafe { munmap(self.base, self.len) };
        debug_assert!(result.is_ok(), "munmap of a reservation failed: {result:?}");
        if let Some(fd) = self.fd() {
            // SAFETY: the reservation owns `fd` (it was made by `memfd` and handed over with
            // `into_raw_fd`, or swapped in by `privatise`); it is closed once, here.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if self.registered {
            let me: *const Reservation = self;
            lock_arenas().retain(|w| !std::ptr::eq(w.as_ptr(), me));
        }
    }
}

/// An exclusively owned, page-aligned range of pages inside a reservation.
///
/// Type invariants, which make the safe methods sound:
///
/// 1. `[addr, addr + len)` is page-aligned, non-empty and inside `reservation`, which stays
///    mapped while this value lives (it holds an `Arc` to it).
/// 2. No other `Pages` covers any byte of the range: a `Pages` is created only for a whole fresh
///    reservation ([`Pages::reserve`], [`Pages::reserve_at`], [`Pages::reserve_shared`]) or by
///    [`Pages::split_off`], which shrinks `self` by what it returns; [`Pages::merge`] consumes
///    the absorbed value. For a shared reservation the same holds of the part of its memfd
///    that the range shows: only this module maps the memfd, and only at the reservation
///    (whole) or in an alias that [`Pages::store_live`] makes and unmaps under `&mut self`.
/// 3. `prot` is the protection the kernel has for the range: every change goes through here
///    (in a forked child, the atfork handler restores exactly the protections it found).
/// 4. References into the range are only handed out by [`Pages::as_slice`] and
///    [`Pages::as_mut_slice`], borrowing `self`; protection changes, decommits and live stores
///    take `&mut self`, so no reference outlives them.
#[derive(Debug)]
pub(crate) struct Pages {
    addr: usize,
    len: usize,
    prot: Prot,
    reservation: Arc<Reservation>,
}

impl Pages {
    /// Reserves `len` bytes (a non-zero multiple of the page size) of inaccessible private
    /// anonymous address space, where the kernel likes or near the hint `near`.
    pub(crate) fn reserve(len: usize, near: Option<usize>) -> io::Result<Pages> {
        Self::check_len(len)?;
        let base = mmap_reserve(near.unwrap_or(0), len, false, None)?;
        Ok(Self::whole(base, len, None))
    }

    /// Reserves `len` bytes of inaccessible private anonymous address space exactly at `addr`,
    /// never replacing an existing mapping: fails with `io::ErrorKind::AlreadyExists` if
    /// anything is mapped there.
    pub(crate) fn reserve_at(addr: usize, len: usize) -> io::Result<Pages> {
        Self::check_len(len)?;
        Self::check_addr(addr)?;
        let base = mmap_reserve(addr, len, true, None)?;
        Ok(Self::whole(base, len, None))
    }

    /// Reserves `len` bytes of inaccessible address space that shows `file` (which must be
    /// `len` bytes long, [`SharedFile::new`]) from its start ([`Backing::Shared`]): near `addr`
    /// (a hint; 0 for anywhere) or, with `exact`, exactly at `addr` and never replacing an
    /// existing mapping, as with [`Pages::reserve`] and [`Pages::reserve_at`]. The reservation
    /// owns the file from now on.
    pub(crate) fn reserve_shared(
        file: SharedFile,
        len: usize,
        addr: usize,
        exact: bool,
    ) -> io::Result<Pages> {
        Self::check_len(len)?;
        if exact {
            Self::check_addr(addr)?;
        }
        if file.len != len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let base = mmap_reserve(addr, len, exact, Some(&file.fd))?;
        install_fork_handler();
        Ok(Self::whole(base, len, Some(file.fd)))
    }

    fn check_len(len: usize) -> io::Result<()> {
        if len == 0 || len % page_size() != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn check_addr(addr: usize) -> io::Result<()> {
        if addr == 0 || addr % page_size() != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn whole(base: usize, len: usize, fd: Option<OwnedFd>) -> Pages {
        let shared = fd.is_some();
        let reservation = Arc::new(Reservation {
            base,
            len,
            fd: AtomicI32::new(fd.map_or(-1, IntoRawFd::into_raw_fd)),
            registered: shared,
        });
        if shared {
            lock_arenas().push(Arc::downgrade(&reservation));
        }
        Pages {
            addr: base,
            len,
            prot: Prot::None,
            reservation,
        }
    }

    /// First address.
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes (a multiple of the page size).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// One past the last address.
    pub(crate) fn end(&self) -> usize {
        self.addr + self.len
    }

    /// The current protection.
    pub(crate) fn prot(&self) -> Prot {
        self.prot
    }

    /// What backs the pages now (a forked child may have turned shared pages private).
    pub(crate) fn backing(&self) -> Backing {
        match self.reservation.fd() {
            Some(_) => Backing::Shared,
            None => Backing::Private,
        }
    }

    /// Splits the range at byte `at` (page-aligned, strictly inside): `self` keeps
    /// `[addr, addr + at)` and the rest is returned.
    ///
    /// # Panics
    ///
    /// If `at` is not a page multiple strictly between 0 and `len` (a bug in the allocator).
    pub(crate) fn split_off(&mut self, at: usize) -> Pages {
        assert!(
            at > 0 && at < self.len && at % page_size() == 0,
            "split_off({at:#x}) of {self:?}"
        );
        let rest = Pages {
            addr: self.addr + at,
            len: self.len - at,
            prot: self.prot,
            reservation: Arc::clone(&self.reservation),
        };
        self.len = at;
        rest
    }

    /// Absorbs `next` if it starts where `self` ends, belongs to the same reservation and has
    /// the same protection; otherwise gives it back.
    pub(crate) fn merge(&mut self, next: Pages) -> Result<(), Pages> {
        if self.end() == next.addr
            && Arc::ptr_eq(&self.reservation, &next.reservation)
            && self.prot == next.prot
        {
            self.len += next.len;
            Ok(())
        } else {
            Err(next)
        }
    }

    /// Changes the protection of the whole range.
    pub(crate) fn protect(&mut self, prot: Prot) -> io::Result<()> {
        // SAFETY: invariants 1 and 2: the range is aligned, mapped and ours alone; invariant 4:
        // `&mut self` means no reference handed out by `as_slice`/`as_mut_slice` is live.
        unsafe { mprotect(self.addr, self.len, prot)? };
        self.prot = prot;
        Ok(())
    }

    /// Makes the range inaccessible and gives its memory back to the kernel: the pages are
    /// `PROT_NONE` again and their contents are gone (they read as zeros once re-committed).
    ///
    /// Private memory is dropped with `MADV_DONTNEED`; shared memory by punching a hole in the
    /// memfd, since `MADV_DONTNEED` would leave the file holding it.
    pub(crate) fn decommit(&mut self) -> io::Result<()> {
        self.protect(Prot::None)?;
        match self.reservation.fd() {
            // SAFETY: invariants 1, 2 and 4 as in `protect`: the range, and the part of the
            // memfd it shows, are ours alone and unreferenced; the contents are being thrown
            // away on purpose, and the pages are inaccessible so nothing can read them meanwhile.
            Some(fd) => unsafe { punch_hole(fd, self.addr - self.reservation.base, self.len) },
            // SAFETY: as above, for a private anonymous mapping.
            None => unsafe { madvise_dontneed(self.addr, self.len) },
        }
    }

    /// Stores `word` at `offset` (8-byte aligned, inside the range) with one atomic 8-byte
    /// store, through a temporary writable alias of the page, without changing the range's
    /// protection: a thread executing the range meanwhile keeps executing it.
    ///
    /// The pages must be committed (not `PROT_NONE`) and shared ([`Backing::Shared`]): otherwise
    /// `Ok(false)` and nothing is written. The alias exists only during this call, and no
    /// `fork` can happen while it does (the fork handler waits for it).
    ///
    /// Why the executing side sees the old word or the new one and nothing in between: the
    /// store is one naturally aligned 8-byte access, which x86-64 performs atomically (Intel
    /// SDM vol. 3A §9.1.1); both views are the same physical memory, and x86-64 keeps
    /// instruction fetch coherent with stores to it (caches are physically tagged, and
    /// self/cross-modifying code is detected). See
    /// [`CodeRegion::patch_live`](crate::code_memory::CodeRegion::patch_live) for what this
    /// does and does not promise about instructions.
    pub(crate) fn store_live(&mut self, offset: usize, word: u64) -> io::Result<bool> {
        if offset % 8 != 0 || offset >= self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if self.prot == Prot::None {
            return Ok(false);
        }
        // Held while the alias is mapped: a fork meanwhile would copy it into the child.
        let _no_fork = ARENAS.read().unwrap_or_else(PoisonError::into_inner);
        let Some(fd) = self.reservation.fd() else {
            return Ok(false);
        };
        let page = page_size();
        let target = self.addr + offset;
        let page_start = target & !(page - 1);
        let alias = Alias::map(fd, page_start - self.reservation.base, page)?;
        let ptr = (alias.addr + (target - page_start)) as *mut u64;
        // SAFETY: `ptr` is 8-byte aligned (`target` is, and the alias is page-aligned) and lies
        // in the alias, mapped `rw-` until `alias` is dropped below. It shows the word at
        // `target`, which invariant 2 gives to `self` alone, and `&mut self` (invariant 4) means
        // no Rust reference to it is live: no non-atomic access races with this store. Threads
        // executing those bytes fetch instructions, which are outside Rust's memory model.
        unsafe { AtomicU64::from_ptr(ptr) }.store(word, Ordering::SeqCst);
        drop(alias);
        Ok(true)
    }

    /// The bytes of the range, if its protection allows reading.
    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        if !self.prot.is_readable() {
            return None;
        }
        // SAFETY: invariants 1 and 3: the range is mapped and readable; invariant 2 and the
        // `&self` borrow: nothing in Rust writes it while the slice lives (protection changes,
        // live stores and `as_mut_slice` take `&mut self`).
        Some(unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) })
    }

    /// The bytes of the range, mutably, if its protection allows writing.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.prot.is_writable() {
            return None;
        }
        // SAFETY: invariants 1 and 3: the range is mapped and writable; invariant 2 and the
        // `&mut self` borrow: this slice is the only reference into it while it lives.
        Some(unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) })
    }
}

// ---------------------------------------------------------------------------------------------
// Fork
// ---------------------------------------------------------------------------------------------

/// Every live shared reservation of the process. The fork handler takes the write lock before
/// `fork` and releases it after, so the list cannot change and no alias can be mapped while the
/// process forks; [`Pages::store_live`] holds a read lock while its alias exists.
static ARENAS: RwLock<Vec<Weak<Reservation>>> = RwLock::new(Vec::new());

type ArenasGuard = RwLockWriteGuard<'static, Vec<Weak<Reservation>>>;

thread_local! {
    /// The write lock taken by `before_fork`, held on the forking thread until `fork` returns
    /// (in the parent and in the child: the child's only thread is a copy of that one).
    static FORK_GUARD: RefCell<Option<ArenasGuard>> = const { RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// Tests: make the next fork's child take the private anonymous fallback.
    static CHILD_COPIES_PRIVATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The highest address of the calling thread's stack (`pthread_getattr_np`; on the main thread
/// that reads `/proc/self/maps`, hundreds of microseconds: callers cache it).
pub fn stack_top() -> Option<u64> {
    // SAFETY: `pthread_getattr_np` fills `attr` for the calling thread; it is read with
    // `pthread_attr_getstack` and destroyed once, whatever the outcome.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut base, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        (ok && !base.is_null()).then(|| base as u64 + size as u64)
    }
}

thread_local! {
    /// The top (highest address) of this thread's stack, 0 until asked.
    static STACK_TOP: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// [`stack_top`], asked once per thread.
#[inline]
pub(crate) fn cached_stack_top() -> Option<u64> {
    let cached = STACK_TOP.with(std::cell::Cell::get);
    if cached != 0 {
        return Some(cached);
    }
    let top = stack_top()?;
    STACK_TOP.with(|t| t.set(top));
    Some(top)
}

/// Tests: whether children that this thread forks get private anonymous copies of the shared
/// reservations (the fallback when no memfd can be had) instead of memfds of their own.
#[cfg(test)]
pub(crate) fn set_child_copies_private(on: bool) {
    CHILD_COPIES_PRIVATE.with(|c| c.set(on));
}

fn lock_arenas() -> ArenasGuard {
    ARENAS.write().unwrap_or_else(PoisonError::into_inner)
}

fn install_fork_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are plain functions that live as long as the process.
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            )
        };
        // glibc fails only when out of memory for the handler list: the process could not keep
        // a child's code apart from its own, so it must not run on.
        if rc != 0 {
            die(b"uppercut: pthread_atfork failed: cannot keep forked children's code private\n");
        }
    });
}

extern "C" fn before_fork() {
    let guard = lock_arenas();
    // Without thread-local storage (the thread is exiting) the guard is dropped unused and the
    // child handler takes the lock itself.
    let _ = FORK_GUARD.try_with(move |slot| *slot.borrow_mut() = Some(guard));
}

extern "C" fn after_fork_parent() {
    let _ = FORK_GUARD.try_with(|slot| slot.borrow_mut().take());
}

extern "C" fn after_fork_child() {
    crate::reclaim::after_fork_in_child();
    let guard = FORK_GUARD
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten()
        .or_else(|| match ARENAS.try_write() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        });
    let Some(guard) = guard else {
        die(b"uppercut: fork: the code-memory registry is locked in the child\n");
    };
    #[cfg(test)]
    let private = CHILD_COPIES_PRIVATE.with(std::cell::Cell::get);
    #[cfg(not(test))]
    let private = false;
    for reservation in guard.iter().filter_map(Weak::upgrade) {
        if reservation.privatise(private).is_err() {
            die(b"uppercut: fork: cannot give the child a private copy of its code memory\n");
        }
    }
}

/// Writes `message` to stderr and aborts: for the few failures after which the process must not
/// run on. Only async-signal-safe calls.
fn die(message: &[u8]) -> ! {
    // SAFETY: writes bytes from a valid slice to fd 2; the result does not matter.
    let _ = unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    std::process::abort()
}

/// Which parts of `[base, base + len)` hold something: its readable mappings, with their
/// protections.
fn committed_parts(base: usize, len: usize) -> io::Result<Vec<(usize, usize, Prot)>> {
    let end = base + len;
    let mut out = Vec::new();
    for m in maps::process_mappings()? {
        let (start, stop) = (m.range.start.max(base), m.range.end.min(end));
        if start >= stop {
            continue;
        }
        let prot = Prot::of(&m).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        if prot.is_readable() {
            out.push((start, stop - start, prot));
        }
    }
    Ok(out)
}

impl Reservation {
    /// In a forked child (one thread, the registry locked): stops sharing pages with the parent.
    ///
    /// The readable parts of the reservation are copied into a new memfd of the child's own,
    /// which then replaces the parent's at the same addresses (`MAP_FIXED`) with the same
    /// protections; inaccessible parts hold nothing worth keeping (free, or decommitted) and
    /// become holes. If no memfd can be had, or `private` is set, the reservation becomes
    /// private anonymous memory with the same contents and protections instead.
    fn privatise(&self, private: bool) -> io::Result<()> {
        let Some(old) = self.fd() else {
            return Ok(());
        };
        let parts = committed_parts(self.base, self.len)?;
        let copied = if private {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        } else {
            self.copy_into_memfd(&parts)
        };
        let new = match copied {
            Ok(fd) => fd.into_raw_fd(),
            Err(_) => {
                self.copy_into_private(&parts)?;
                -1
            }
        };
        self.fd.store(new, Ordering::Release);
        // SAFETY: `old` was this reservation's own descriptor, no longer mapped anywhere by this
        // process (the reservation now shows another file or private memory).
        drop(unsafe { OwnedFd::from_raw_fd(old) });
        Ok(())
    }

    /// Copies `parts` into a fresh memfd and maps it over the reservation. Fails without
    /// changing anything, or succeeds; a failure after the point of no return aborts.
    fn copy_into_memfd(&self, parts: &[(usize, usize, Prot)]) -> io::Result<OwnedFd> {
        let fd = memfd(self.len)?;
        for &(start, len, _) in parts {
            let mut done = 0;
            while done < len {
                let offset = libc::off_t::try_from(start - self.base + done)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
                // SAFETY: `[start + done, start + len)` is mapped readable (the kernel's maps
                // say so) and nothing else runs in the child to change it; pwrite only reads it.
                let n = unsafe {
                    libc::pwrite(
                        fd.as_raw_fd(),
                        (start + done) as *const c_void,
                        len - done,
                        offset,
                    )
                };
                match n {
                    n if n > 0 => done += n as usize,
                    0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => return Err(last_error()),
                }
            }
        }
        let flags = libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE;
        // SAFETY: MAP_FIXED replaces the reservation, which this module mapped, with the new
        // file at the same addresses. Every readable byte was copied into the file just above,
        // and the protections are restored below before the child runs anything else (it has
        // one thread, here): all code and data of the child stay where they were and as they
        // were. Inaccessible parts held nothing anyone may rely on.
        let ptr = unsafe {
            libc::mmap(
                self.base as *mut c_void,
                self.len,
                libc::PROT_NONE,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED || ptr as usize != self.base {
            // The old mapping may be gone: there is no going back.
            die(b"uppercut: fork: cannot map the child's copy of its code memory\n");
        }
        for &(start, len, prot) in parts {
            // SAFETY: restores the protection the range had a moment ago, in a mapping this
            // module made; no reference could rely on anything else.
            if unsafe { mprotect(start, len, prot) }.is_err() {
                die(b"uppercut: fork: cannot restore the protection of the child's code\n");
            }
        }
        Ok(fd)
    }

    /// Copies `parts` into private anonymous memory and moves it over the reservation, the rest
    /// of which becomes private inaccessible memory. A failure before anything changed returns
    /// an error; one after aborts.
    fn copy_into_private(&self, parts: &[(usize, usize, Prot)]) -> io::Result<()> {
        let mut copies = Vec::with_capacity(parts.len());
        for &(start, len, prot) in parts {
            let copy = mmap_reserve(0, len, false, None)?;
            // SAFETY: `copy` is the private mapping just made, which nothing refers to;
            // `[start, start + len)` is mapped readable (the kernel's maps say so) and nothing
            // else runs in the child to change it; the two ranges are distinct mappings.
            unsafe {
                mprotect(copy, len, Prot::ReadWrite)?;
                std::ptr::copy_nonoverlapping(start as *const u8, copy as *mut u8, len);
                mprotect(copy, len, prot)?;
            }
            copies.push((start, copy, len));
        }
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
        // SAFETY: as in `copy_into_memfd`: MAP_FIXED replaces this module's own reservation;
        // every readable byte is in `copies`, moved back into place below before the child runs
        // anything else.
        let ptr = unsafe {
            libc::mmap(
                self.base as *mut c_void,
                self.len,
                libc::PROT_NONE,
                flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED || ptr as usize != self.base {
            die(b"uppercut: fork: cannot map the child's private code memory\n");
        }
        for (start, copy, len) in copies {
            let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
            // SAFETY: moves the private copy (made above, referred to by nothing) onto
            // `[start, start + len)` of this reservation, replacing what the mmap above put
            // there, with its contents and protection; `copy` is not used again.
            let ptr =
                unsafe { libc::mremap(copy as *mut c_void, len, len, flags, start as *mut c_void) };
            if ptr == libc::MAP_FAILED {
                die(b"uppercut: fork: cannot move the child's private code into place\n");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_merge_round_trip() {
        let page = page_size();
        let mut a = Pages::reserve(4 * page, None).unwrap();
        let base = a.addr();
        let b = a.split_off(page);
        assert_eq!((a.addr(), a.len()), (base, page));
        assert_eq!((b.addr(), b.len()), (base + page, 3 * page));
        a.merge(b).unwrap();
        assert_eq!((a.addr(), a.len()), (base, 4 * page));
    }

    #[test]
    fn merge_refuses_non_adjacent_other_reservation_or_other_protection() {
        let page = page_size();
        let mut a = Pages::reserve(3 * page, None).unwrap();
        let mut b = a.split_off(page);
        let c = b.split_off(page);
        // Not adjacent.
        let c = a.merge(c).unwrap_err();
        // Different protection.
        b.protect(Prot::ReadWrite).unwrap();
        let b = a.merge(b).unwrap_err();
        // Other reservation, even if it happened to be adjacent.
        let other = Pages::reserve(page, None).unwrap();
        let other = a.merge(other).unwrap_err();
        assert_eq!(other.len(), page);
        drop((b, c));
    }

    #[test]
    fn slices_follow_protection_and_decommit_zeroes() {
        let page = page_size();
        let mut p = Pages::reserve(page, None).unwrap();
        assert!(p.as_slice().is_none());
        p.protect(Prot::ReadWrite).unwrap();
        p.as_mut_slice().unwrap()[..3].copy_from_slice(&[1, 2, 3]);
        assert_eq!(resident_pages(p.addr(), p.len()).unwrap(), 1);
        p.protect(Prot::ReadExec).unwrap();
        assert!(p.as_mut_slice().is_none());
        assert_eq!(&p.as_slice().unwrap()[..3], &[1, 2, 3]);
        p.decommit().unwrap();
        assert_eq!(p.prot(), Prot::None);
        assert_eq!(resident_pages(p.addr(), p.len()).unwrap(), 0);
        p.protect(Prot::Read).unwrap();
        assert_eq!(&p.as_slice().unwrap()[..3], &[0, 0, 0]);
    }

    #[test]
    fn shared_pages_take_live_stores_and_give_their_memory_back() {
        let page = page_size();
        let file = SharedFile::new(2 * page).unwrap();
        let mut p = Pages::reserve_shared(file, 2 * page, 0, false).unwrap();
        assert_eq!(p.backing(), Backing::Shared);
        // Nothing committed yet: nothing stored.
        assert!(!p.store_live(0, 1).unwrap());
        p.protect(Prot::ReadWrite).unwrap();
        p.as_mut_slice().unwrap()[page..page + 8].copy_from_slice(&[1; 8]);
        p.protect(Prot::ReadExec).unwrap();
        assert!(p.store_live(page, u64::from_le_bytes([2; 8])).unwrap());
        assert_eq!(&p.as_slice().unwrap()[page..page + 8], &[2; 8]);
        assert_eq!(p.prot(), Prot::ReadExec);
        for bad in [3, 2 * page] {
            let err = p.store_live(bad, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
        assert_eq!(resident_pages(p.addr(), p.len()).unwrap(), 1);
        p.decommit().unwrap();
        assert_eq!(resident_pages(p.addr(), p.len()).unwrap(), 0);
        p.protect(Prot::Read).unwrap();
        assert_eq!(&p.as_slice().unwrap()[page..page + 8], &[0; 8]);

        // The file must be as long as the reservation; an exact place is never taken over.
        let short = SharedFile::new(page).unwrap();
        assert!(Pages::reserve_shared(short, 2 * page, 0, false).is_err());
        let file = SharedFile::new(page).unwrap();
        let err = Pages::reserve_shared(file, page, p.addr(), true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);

        // Private memory has no alias.
        let mut private = Pages::reserve(page, None).unwrap();
        private.protect(Prot::ReadExec).unwrap();
        assert_eq!(private.backing(), Backing::Private);
        assert!(!private.store_live(0, 1).unwrap());
    }

    #[test]
    fn reserve_at_never_replaces() {
        let page = page_size();
        let p = Pages::reserve(page, None).unwrap();
        let err = Pages::reserve_at(p.addr(), page).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(Pages::reserve_at(p.addr() + 1, page).is_err());
    }
}
