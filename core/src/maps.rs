//! The process's mappings, as `/proc/self/maps` shows them.
//!
//! Safe code only: the code-memory allocator uses it to find free address space outside its
//! arena, tests use it to check protections, and the fork handler in [`crate::sys`] uses it to
//! learn which pages of an arena hold something and with which protection.

use std::fmt;
use std::io;
use std::ops::Range;

/// The permissions of a mapping, as `/proc/self/maps` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Permissions {
    /// `r`
    pub read: bool,
    /// `w`
    pub write: bool,
    /// `x`
    pub execute: bool,
    /// `s` (shared) rather than `p` (private).
    pub shared: bool,
}

impl Permissions {
    /// `r-x`: published code.
    pub const READ_EXECUTE: Permissions = Permissions {
        read: true,
        write: false,
        execute: true,
        shared: false,
    };
    /// `rw-`: writable, not executable.
    pub const READ_WRITE: Permissions = Permissions {
        read: true,
        write: true,
        execute: false,
        shared: false,
    };
    /// `r--`: read-only.
    pub const READ: Permissions = Permissions {
        read: true,
        write: false,
        execute: false,
        shared: false,
    };
    /// `---`: reserved, inaccessible.
    pub const NONE: Permissions = Permissions {
        read: false,
        write: false,
        execute: false,
        shared: false,
    };
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on, c| if on { c } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            flag(self.read, 'r'),
            flag(self.write, 'w'),
            flag(self.execute, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The mapping's address range.
    pub range: Range<usize>,
    /// Its permissions.
    pub perms: Permissions,
    /// Offset in the mapped file.
    pub offset: u64,
    /// The mapped file or pseudo-name (`[heap]`, `[stack]`), if any.
    pub path: Option<String>,
}

impl Mapping {
    /// Whether the mapping is both writable and executable.
    pub fn is_writable_executable(&self) -> bool {
        self.perms.write && self.perms.execute
    }
}

/// Every mapping of the process, in address order, from `/proc/self/maps`.
pub fn process_mappings() -> io::Result<Vec<Mapping>> {
    parse_mappings(&std::fs::read_to_string("/proc/self/maps")?)
}

/// Every mapping of the process that is both writable and executable: with this allocator alone,
/// none. Tests that run guest code assert this stays empty.
pub fn writable_executable_mappings() -> io::Result<Vec<Mapping>> {
    Ok(process_mappings()?
        .into_iter()
        .filter(Mapping::is_writable_executable)
        .collect())
}

/// The mapping of the process that contains `addr`, if any.
pub fn mapping_containing(addr: usize) -> io::Result<Option<Mapping>> {
    Ok(process_mappings()?
        .into_iter()
        .find(|m| m.range.contains(&addr)))
}

fn parse_mappings(text: &str) -> io::Result<Vec<Mapping>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            parse_mapping(line).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected /proc/self/maps line: {line:?}"),
                )
            })
        })
        .collect()
}

/// `start-end perms offset dev inode [path]`, hexadecimal addresses and offset.
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (word, tail) = trimmed.split_at(end);
        rest = tail;
        (!word.is_empty()).then_some(word)
    };
    let (start, end) = field()?.split_once('-')?;
    let perms = field()?.as_bytes();
    let offset = field()?;
    let _dev = field()?;
    let _inode = field()?;
    if perms.len() != 4 {
        return None;
    }
    let path = rest.trim();
    Some(Mapping {
        range: usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?,
        perms: Permissions {
            read: perms[0] == b'r',
            write: perms[1] == b'w',
            execute: perms[2] == b'x',
            shared: perms[3] == b's',
        },
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: (!path.is_empty()).then(|| path.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parser_reads_permissions_offsets_and_paths() {
        let text = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7ffd1a2b3000-7ffd1a2d4000 rw-p 00000000 00:00 0                          [stack]
7f1000000000-7f1000002000 rw-s 00001000 00:05 42   /memfd:with space (deleted)
";
        let maps = parse_mappings(text).unwrap();
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].range, 0x400000..0x452000);
        assert_eq!(maps[0].perms, Permissions::READ_EXECUTE);
        assert_eq!(maps[0].path.as_deref(), Some("/usr/bin/dbus-daemon"));
        assert!(maps[1].is_writable_executable());
        assert_eq!(maps[1].perms.to_string(), "rwxp");
        assert_eq!(maps[1].path, None);
        assert_eq!(maps[2].path.as_deref(), Some("[stack]"));
        assert!(maps[3].perms.shared && maps[3].offset == 0x1000);
        assert_eq!(maps[3].path.as_deref(), Some("/memfd:with space (deleted)"));
        assert!(parse_mappings("not a mapping\n").is_err());
        assert!(parse_mappings("1000-2000 rw 0 0:0 0\n").is_err());

        let local = 5u64;
        let stack = mapping_containing(&local as *const u64 as usize)
            .unwrap()
            .unwrap();
        assert!(stack.perms.read && stack.perms.write && !stack.perms.execute);
        assert_eq!(writable_executable_mappings().unwrap(), vec![]);
    }
}
