//! Patching published code: in the scoped writable step (bounds, length and contents checked),
//! or live, one aligned 8-byte word through a writable alias while the region stays executable.

#[cfg(doc)]
use super::ArenaConfig;
use super::{CodeMemoryError, CodeRegion};
use crate::sys::Backing;

impl CodeRegion {
    /// Writes `bytes` at `offset` in the scoped writable step. The patch must lie entirely
    /// within the region's requested bytes ([`CodeMemoryError::PatchOutOfBounds`]).
    pub fn patch(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = self.check_bounds(offset, bytes.len())?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.with_writable(|buf| buf[offset..end].copy_from_slice(bytes))
    }

    /// Replaces the bytes `expected` at `offset` by `new` in the scoped writable step, after
    /// checking that both have exactly the same length ([`CodeMemoryError::PatchLengthMismatch`])
    /// and that the region holds `expected` there ([`CodeMemoryError::PatchContentsMismatch`]):
    /// a patch of the wrong size or over the wrong instruction writes nothing.
    pub fn replace(
        &mut self,
        offset: usize,
        expected: &[u8],
        new: &[u8],
    ) -> Result<(), CodeMemoryError> {
        if expected.len() != new.len() {
            return Err(CodeMemoryError::PatchLengthMismatch {
                addr: self.addr(),
                offset,
                expected: expected.len(),
                actual: new.len(),
            });
        }
        let end = self.check_bounds(offset, new.len())?;
        if &self.as_slice()[offset..end] != expected {
            return Err(CodeMemoryError::PatchContentsMismatch {
                addr: self.addr(),
                offset,
                len: new.len(),
            });
        }
        self.patch(offset, new)
    }

    /// Whether [`patch_live`](Self::patch_live) can write this region: it lies in a
    /// dual-mapped arena, so its pages have a second, writable view.
    pub fn can_patch_live(&self) -> bool {
        self.pages().backing() == Backing::Shared
    }

    /// Writes `bytes` at `offset` while the region keeps its state and protection (`r-x` for
    /// published code), with one atomic 8-byte store.
    ///
    /// The bytes must lie inside the region's requested bytes
    /// ([`CodeMemoryError::PatchOutOfBounds`]) and within one naturally aligned 8-byte word
    /// ([`CodeMemoryError::PatchNotAtomic`]; the region starts on a page, so the alignment of
    /// `offset` is that of the address). The word, holding the new bytes and its other bytes
    /// as they are, is stored through a writable alias of its page that exists only during
    /// this call; a region without one (outside the arena, or in an arena without
    /// [`ArenaConfig::dual_mapping`]) gets [`CodeMemoryError::NotAliasable`] and is left as it
    /// is. The region may be in any state.
    ///
    /// **Threads running the region meanwhile.** Unlike [`patch`](Self::patch), no page of the
    /// region stops being executable, so other threads may run it, the patched bytes included:
    ///
    /// - The store is one naturally aligned 8-byte access, which x86-64 performs atomically
    ///   (Intel SDM vol. 3A, §9.1.1), and such a word never straddles a cache line. Instruction
    ///   fetch is coherent with stores on x86-64, including another processor's stores through
    ///   another virtual address of the same physical memory (caches are physically tagged).
    ///   A processor fetching the word gets all of it from before the store or all of it from
    ///   after: it decodes the old bytes or the new ones, never a mix.
    /// - A processor that decoded the old bytes just before the store may still execute the old
    ///   instruction once more. The old code must therefore stay correct to run for a while
    ///   (a relinked entry's no-op, or its earlier jump, still leads to a live version).
    /// - The new bytes should replace whole instructions by whole instructions, starting where
    ///   the old ones started (a 5-byte no-op by a 5-byte `jmp rel32`): a thread may be about
    ///   to execute any instruction that begins in the word, and must find one there.
    /// - Intel's cross-modifying-code recipe (SDM vol. 3A, §9.1.3) further has the executing
    ///   processors serialise before running modified code. Nothing here makes them; as JITs
    ///   that patch entries with one aligned atomic store do, this relies on the first point.
    ///
    /// No data-cache or instruction-cache flush is needed on x86-64.
    ///
    /// ```
    /// use uppercut_core::code_memory::{CodeArena, CodeMemoryError, RegionRequest, RegionState};
    ///
    /// let arena = CodeArena::new()?;
    /// let mut code = arena.allocate(RegionRequest::code(6))?;
    /// code.as_mut_slice()?.copy_from_slice(&[0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3]); // mov eax, 42; ret
    /// code.publish()?;
    /// code.patch_live(1, &[7, 0, 0, 0])?; // r-x all along
    /// assert_eq!(code.as_slice(), &[0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3]);
    /// assert_eq!(code.state(), RegionState::Executable);
    /// // Bytes 6..10 straddle the aligned words 0..8 and 8..16.
    /// let mut long = arena.allocate(RegionRequest::code(16))?;
    /// long.publish()?;
    /// assert!(matches!(long.patch_live(6, &[0x90; 4]), Err(CodeMemoryError::PatchNotAtomic { .. })));
    /// # Ok::<(), CodeMemoryError>(())
    /// ```
    pub fn patch_live(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = self.check_bounds(offset, bytes.len())?;
        if bytes.is_empty() {
            return Ok(());
        }
        let addr = self.addr();
        let word = offset & !7;
        if end - word > 8 {
            return Err(CodeMemoryError::PatchNotAtomic {
                addr,
                offset,
                len: bytes.len(),
            });
        }
        let pages = self.pages_mut();
        // The word lies in the region's pages (which are whole, aligned pages), and a live
        // region is always readable.
        let Some(old) = pages.as_slice().and_then(|b| b.get(word..word + 8)) else {
            return Err(CodeMemoryError::NotAliasable { addr });
        };
        let mut new = [0u8; 8];
        new.copy_from_slice(old);
        new[offset - word..end - word].copy_from_slice(bytes);
        match pages.store_live(word, u64::from_le_bytes(new)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(CodeMemoryError::NotAliasable { addr }),
            Err(source) => Err(CodeMemoryError::Alias {
                addr: addr + word,
                source,
            }),
        }
    }

    fn check_bounds(&self, offset: usize, len: usize) -> Result<usize, CodeMemoryError> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.len)
            .ok_or(CodeMemoryError::PatchOutOfBounds {
                addr: self.addr(),
                offset,
                len,
                region_len: self.len,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::code_memory::testing::*;
    use crate::code_memory::*;

    #[test]
    fn runs_patches_and_relinks_machine_code() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert_eq!(call(&f), 42);

        f.patch(1, &7i32.to_le_bytes()).unwrap();
        assert_eq!(call(&f), 7);
        f.replace(1, &7i32.to_le_bytes(), &42i32.to_le_bytes())
            .unwrap();
        assert_eq!(call(&f), 42);

        // Relink: overwrite f's `mov eax, 42` (5 bytes) with `jmp rel32` to a new version g.
        let g = code(&arena, &returning(-3));
        let rel = i32::try_from(g.addr() as i64 - (f.addr() as i64 + 5)).unwrap();
        let mut jmp = [0xe9, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&rel.to_le_bytes());
        f.replace(0, &MOV_EAX_42_RET[..5], &jmp).unwrap();
        assert_eq!(call(&f), -3);
        assert_perms(&f, ARENA_RX);
    }

    #[test]
    fn patches_are_bounds_and_length_checked() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert!(matches!(
            f.patch(5, &[0xc3, 0x90]),
            Err(CodeMemoryError::PatchOutOfBounds {
                offset: 5,
                len: 2,
                region_len: 6,
                ..
            })
        ));
        assert!(matches!(
            f.patch(usize::MAX, &[1]),
            Err(CodeMemoryError::PatchOutOfBounds { .. })
        ));
        f.patch(6, &[]).unwrap();
        assert!(matches!(
            f.replace(1, &[0x2a], &[7, 0]),
            Err(CodeMemoryError::PatchLengthMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        assert!(matches!(
            f.replace(1, &[0x2b], &[0x07]),
            Err(CodeMemoryError::PatchContentsMismatch {
                offset: 1,
                len: 1,
                ..
            })
        ));
        assert!(matches!(
            f.replace(4, &[0, 0xc3, 0], &[0, 0xc3, 0]),
            Err(CodeMemoryError::PatchOutOfBounds { .. })
        ));
        assert_eq!(f.as_slice(), &MOV_EAX_42_RET);
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);
        assert_eq!(call(&f), 42);
    }

    #[test]
    fn live_patches_store_one_word_and_keep_the_region_as_it_is() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert!(f.can_patch_live());
        f.patch_live(1, &7i32.to_le_bytes()).unwrap();
        assert_eq!(f.as_slice(), &returning(7));
        assert_eq!(call(&f), 7);
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);

        // Relink as the engine does: the 5-byte `mov` becomes a `jmp rel32` to g, written with
        // the byte after it (`ret`, unchanged) as one word.
        let g = code(&arena, &returning(-3));
        let rel = i32::try_from(g.addr() as i64 - (f.addr() as i64 + 5)).unwrap();
        let mut jmp = [0xe9, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&rel.to_le_bytes());
        f.patch_live(0, &jmp).unwrap();
        assert_eq!(call(&f), -3);
        assert_eq!(f.as_slice()[5], 0xc3);
        f.patch_live(0, &MOV_EAX_42_RET[..5]).unwrap();
        assert_eq!(call(&f), 42);
        f.patch_live(6, &[]).unwrap();

        // Any state, and the state stays.
        let mut rw = arena.allocate(RegionRequest::data(16)).unwrap();
        rw.patch_live(8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(&rw.as_slice()[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(rw.state(), RegionState::Writable);
        rw.make_read_only().unwrap();
        rw.patch_live(3, &[9]).unwrap();
        assert_eq!(rw.as_slice()[..4], [0, 0, 0, 9]);
        assert_eq!(rw.state(), RegionState::ReadOnly);
        assert_perms(&rw, ARENA_R);
    }

    #[test]
    fn live_patches_must_fit_one_aligned_word() {
        let arena = arena(16 << 20);
        let mut f = arena.allocate(RegionRequest::code(20)).unwrap();
        f.as_mut_slice().unwrap().fill(0x90);
        f.publish().unwrap();
        for (offset, len) in [(6, 4), (7, 2), (0, 9), (4, 8), (15, 2)] {
            let err = f.patch_live(offset, &vec![0xcc; len]).unwrap_err();
            assert!(
                matches!(err, CodeMemoryError::PatchNotAtomic { offset: o, len: l, .. } if o == offset && l == len),
                "{offset} {len}: {err:?}"
            );
            assert!(err.to_string().contains("one atomic store"), "{err}");
        }
        assert!(matches!(
            f.patch_live(18, &[0xcc; 4]),
            Err(CodeMemoryError::PatchOutOfBounds { .. })
        ));
        assert!(f.as_slice().iter().all(|&b| b == 0x90));
        // Whole words, and any part of one, are fine.
        for (offset, len) in [(0, 8), (8, 8), (5, 3), (16, 4), (7, 1)] {
            f.patch_live(offset, &vec![0xc3; len]).unwrap();
        }
        assert!(f.as_slice().iter().all(|&b| b == 0xc3));
    }

    #[test]
    fn arenas_without_dual_mapping_cannot_patch_live() {
        let arena =
            CodeArena::with_config(ArenaConfig::new().size(16 << 20).dual_mapping(false)).unwrap();
        assert_eq!(perms_of(arena.range()), vec![Permissions::NONE]);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert_perms(&f, Permissions::READ_EXECUTE);
        assert!(!f.can_patch_live());
        let err = f.patch_live(1, &[7]).unwrap_err();
        assert!(matches!(err, CodeMemoryError::NotAliasable { addr } if addr == f.addr()));
        assert!(err.to_string().contains("cannot be patched live"), "{err}");
        assert_eq!(call(&f), 42);
        // The scoped step still works, and freeing still gives the memory back.
        f.patch(1, &[7]).unwrap();
        assert_eq!(call(&f), 7);
        drop(f);
        assert_eq!(arena.resident_bytes().unwrap(), 0);
    }

    #[test]
    fn live_patches_while_other_threads_run_the_region() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const VALUES: [i32; 2] = [0x1111_1111, 0x2222_2222];
        let arena = arena(16 << 20);
        // `mov eax, imm32; ret` at offset 0: the immediate is bytes 1..5, inside word 0..8.
        let mut f = code(&arena, &returning(VALUES[0]));
        let entry = f.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    // SAFETY: the region stays mapped and executable until the threads are
                    // joined, and holds a complete function returning an i32 whatever the patch.
                    let f = unsafe { std::mem::transmute::<usize, extern "C" fn() -> i32>(entry) };
                    let mut seen = [0u64; 2];
                    while !stop.load(Ordering::Relaxed) {
                        match f() {
                            v if v == VALUES[0] => seen[0] += 1,
                            v if v == VALUES[1] => seen[1] += 1,
                            v => panic!("torn patch: {v:#x}"),
                        }
                    }
                    seen
                })
            })
            .collect();
        for i in 0..20_000 {
            f.patch_live(1, &VALUES[(i + 1) % 2].to_le_bytes()).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for runner in runners {
            let seen = runner.join().expect("a runner failed");
            assert!(seen[0] + seen[1] > 0);
        }
        assert_eq!(call(&f), VALUES[0]);
        assert_perms(&f, ARENA_RX);
    }
}
