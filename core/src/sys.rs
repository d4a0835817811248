//! System calls for code memory, and the one safe type built on them.
//!
//! Every `unsafe` block of the code-memory allocator lives here. The raw wrappers (`mprotect`,
//! `madvise`, `munmap`) are `unsafe fn`s whose `# Safety` sections say what the caller must
//! uphold; the only callers are the methods of [`Pages`], whose type invariants uphold it. The
//! allocator in [`crate::code_memory`] is written entirely in safe code on top of [`Pages`].
//!
//! W^X is structural at this level: [`Prot`] has no read-write-execute value, so no call made
//! from this module can ever ask the kernel for a writable and executable page.

use std::ffi::c_void;
use std::io;
use std::sync::Arc;

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

    /// Whether loads from pages with this protection succeed.
    pub(crate) fn is_readable(self) -> bool {
        self != Prot::None
    }

    /// Whether stores to pages with this protection succeed.
    pub(crate) fn is_writable(self) -> bool {
        self == Prot::ReadWrite
    }
}

/// Maps `len` bytes of fresh anonymous memory with no access (`PROT_NONE`), not charged against
/// swap (`MAP_NORESERVE`), and returns its address.
///
/// With `exact == false`, a non-zero `addr` is only a hint that the kernel may ignore. With
/// `exact == true` the mapping is placed at `addr` or not at all (`MAP_FIXED_NOREPLACE`): if
/// anything is mapped there the call fails with `EEXIST` (`io::ErrorKind::AlreadyExists`).
///
/// This function is safe: without `MAP_FIXED` the kernel never replaces an existing mapping, so
/// no memory that any code can reach changes, and the new mapping is inaccessible until its owner
/// changes its protection.
fn mmap_reserve(addr: usize, len: usize, exact: bool) -> io::Result<usize> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if exact {
        flags |= libc::MAP_FIXED_NOREPLACE;
    }
    // SAFETY: an anonymous mapping (fd -1, offset 0) without MAP_FIXED: `addr` is a hint, or with
    // MAP_FIXED_NOREPLACE a demand that fails rather than replacing anything. No existing memory
    // is touched; the result is checked against MAP_FAILED below.
    let ptr = unsafe { libc::mmap(addr as *mut c_void, len, libc::PROT_NONE, flags, -1, 0) };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
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
    let rc = unsafe { libc::mprotect(addr as *mut c_void, len, prot.bits()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
    let rc = unsafe { libc::madvise(addr as *mut c_void, len, libc::MADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
///
/// The range must be a mapping this module created, and nothing may use any address of it
/// afterwards (no reference, no pointer that will be dereferenced, no code that will run there).
unsafe fn munmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is ours and dead.
    let rc = unsafe { libc::munmap(addr as *mut c_void, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Counts the pages of `[addr, addr + len)` that are resident in memory (`mincore`).
///
/// `addr` must be page-aligned and the whole range mapped, or the kernel answers `EINVAL` or
/// `ENOMEM`. This only reads page tables: the memory of the range is not accessed.
pub(crate) fn resident_pages(addr: usize, len: usize) -> io::Result<usize> {
    let pages = len.div_ceil(page_size());
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore writes one byte per page of the range into `vec`, which has exactly that
    // many bytes; it reads page tables only and never touches the range's memory.
    let rc = unsafe { libc::mincore(addr as *mut c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count())
}

/// One mapping made by [`mmap_reserve`], unmapped when the last [`Pages`] of it is dropped.
#[derive(Debug)]
struct Reservation {
    base: usize,
    len: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: every `Pages` of this reservation holds an `Arc` to it, so when this runs no
        // `Pages` (hence no reference handed out by one) is left; the range is ours and dead.
        let result = unsafe { munmap(self.base, self.len) };
        debug_assert!(result.is_ok(), "munmap of a reservation failed: {result:?}");
    }
}

/// An exclusively owned, page-aligned range of pages inside a reservation.
///
/// Type invariants, which make the safe methods sound:
///
/// 1. `[addr, addr + len)` is page-aligned, non-empty and inside `reservation`, which stays
///    mapped while this value lives (it holds an `Arc` to it).
/// 2. No other `Pages` covers any byte of the range: a `Pages` is created only for a whole fresh
///    reservation ([`Pages::reserve`], [`Pages::reserve_at`]) or by [`Pages::split_off`], which
///    shrinks `self` by what it returns; [`Pages::merge`] consumes the absorbed value.
/// 3. `prot` is the protection the kernel has for the range: every change goes through here.
/// 4. References into the range are only handed out by [`Pages::as_slice`] and
///    [`Pages::as_mut_slice`], borrowing `self`; protection changes and decommits take
///    `&mut self`, so no reference outlives them.
#[derive(Debug)]
pub(crate) struct Pages {
    addr: usize,
    len: usize,
    prot: Prot,
    reservation: Arc<Reservation>,
}

impl Pages {
    /// Reserves `len` bytes (a non-zero multiple of the page size) of inaccessible address space,
    /// where the kernel likes or near the hint `near`.
    pub(crate) fn reserve(len: usize, near: Option<usize>) -> io::Result<Pages> {
        Self::check_len(len)?;
        let base = mmap_reserve(near.unwrap_or(0), len, false)?;
        Ok(Self::whole(base, len))
    }

    /// Reserves `len` bytes of inaccessible address space exactly at `addr`, never replacing an
    /// existing mapping: fails with `io::ErrorKind::AlreadyExists` if anything is mapped there.
    pub(crate) fn reserve_at(addr: usize, len: usize) -> io::Result<Pages> {
        Self::check_len(len)?;
        if addr == 0 || addr % page_size() != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let base = mmap_reserve(addr, len, true)?;
        Ok(Self::whole(base, len))
    }

    fn check_len(len: usize) -> io::Result<()> {
        if len == 0 || len % page_size() != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    fn whole(base: usize, len: usize) -> Pages {
        Pages {
            addr: base,
            len,
            prot: Prot::None,
            reservation: Arc::new(Reservation { base, len }),
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
    pub(crate) fn decommit(&mut self) -> io::Result<()> {
        self.protect(Prot::None)?;
        // SAFETY: invariants 1, 2 and 4 as in `protect`; the contents are being thrown away on
        // purpose, and the pages are inaccessible so nothing can read them meanwhile.
        unsafe { madvise_dontneed(self.addr, self.len) }
    }

    /// The bytes of the range, if its protection allows reading.
    pub(crate) fn as_slice(&self) -> Option<&[u8]> {
        if !self.prot.is_readable() {
            return None;
        }
        // SAFETY: invariants 1 and 3: the range is mapped and readable; invariant 2 and the
        // `&self` borrow: nothing in Rust writes it while the slice lives (protection changes
        // and `as_mut_slice` take `&mut self`).
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
    fn reserve_at_never_replaces() {
        let page = page_size();
        let p = Pages::reserve(page, None).unwrap();
        let err = Pages::reserve_at(p.addr(), page).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(Pages::reserve_at(p.addr() + 1, page).is_err());
    }
}
