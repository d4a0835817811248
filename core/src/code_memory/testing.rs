//! What the unit tests of the submodules share: small arenas, machine code, protection checks.

use std::ops::Range;

use super::*;
use crate::sys;

/// `mov eax, 42; ret`
pub(super) const MOV_EAX_42_RET: [u8; 6] = [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];

/// How the pages of a (dual-mapped) arena show in `/proc/self/maps`: shared mappings of its
/// memfd, with the protections of the state machine.
pub(super) const ARENA_NONE: Permissions = Permissions {
    shared: true,
    ..Permissions::NONE
};
pub(super) const ARENA_R: Permissions = Permissions {
    shared: true,
    ..Permissions::READ
};
pub(super) const ARENA_RW: Permissions = Permissions {
    shared: true,
    ..Permissions::READ_WRITE
};
pub(super) const ARENA_RX: Permissions = Permissions {
    shared: true,
    ..Permissions::READ_EXECUTE
};

pub(super) fn page() -> usize {
    sys::page_size()
}

/// A small arena, so that parallel tests do not each reserve a gigabyte.
pub(super) fn arena(size: usize) -> CodeArena {
    CodeArena::with_config(ArenaConfig::new().size(size)).unwrap()
}

pub(super) fn arena_with(size: usize, outside: OutsidePolicy) -> CodeArena {
    CodeArena::with_config(ArenaConfig::new().size(size).outside(outside)).unwrap()
}

/// The protections across `range`, in address order. Neighbouring mappings with the same
/// protection count once: the kernel does not always merge them (it keeps two areas apart
/// when their pages were faulted in separately), and that is not the arena's doing.
pub(super) fn perms_of(range: Range<usize>) -> Vec<Permissions> {
    let mut perms: Vec<Permissions> = process_mappings()
        .unwrap()
        .into_iter()
        .filter(|m| m.range.start < range.end && range.start < m.range.end)
        .map(|m| m.perms)
        .collect();
    perms.dedup();
    perms
}

pub(super) fn pages_of(region: &CodeRegion) -> Range<usize> {
    region.addr()..region.addr() + region.mapped_len()
}

/// Every page of `region` has `expected`, and no mapping of the process is `rwx`.
pub(super) fn assert_perms(region: &CodeRegion, expected: Permissions) {
    let found = perms_of(pages_of(region));
    assert!(!found.is_empty(), "{region:?} is not mapped");
    assert!(
        found.iter().all(|p| *p == expected),
        "{region:?}: {found:?}, expected {expected}"
    );
    assert_eq!(writable_executable_mappings().unwrap(), vec![]);
}

pub(super) fn call(region: &CodeRegion) -> i32 {
    assert_eq!(region.state(), RegionState::Executable);
    // SAFETY: the region is published (r-x), stays mapped while borrowed, and holds at its
    // start a complete x86-64 C-ABI function without arguments returning an i32 in eax.
    let f = unsafe { std::mem::transmute::<*const u8, extern "C" fn() -> i32>(region.as_ptr()) };
    f()
}

/// `mov eax, value; ret`
pub(super) fn returning(value: i32) -> [u8; 6] {
    let mut code = MOV_EAX_42_RET;
    code[1..5].copy_from_slice(&value.to_le_bytes());
    code
}

pub(super) fn code(arena: &CodeArena, bytes: &[u8]) -> CodeRegion {
    let mut region = arena.allocate(RegionRequest::code(bytes.len())).unwrap();
    region.as_mut_slice().unwrap().copy_from_slice(bytes);
    region.publish().unwrap();
    region
}
