//! A minimal deterministic tar writer whose bytes are those of Go's `archive/tar` (the
//! library ko, apko, crane and containerd write layers with) for the same headers.
//!
//! Every header byte is decided here, so the output depends on nothing but the entries:
//! - USTAR when it can hold the entry: numeric fields are zero-padded octal ending in NUL,
//!   a name longer than 100 bytes is split into `prefix`/`name` at the last `/` that fits;
//! - `uname`/`gname` stay empty and device numbers zero: nothing comes from the host;
//! - PAX only where USTAR cannot hold a value (a non-ASCII or unsplittable name, a long or
//!   non-ASCII link target, a number too large for its field). The extended header (`x`)
//!   then carries every such record sorted by key, and is named
//!   `<dir>/PaxHeaders.0/<file>` with mode, owner and mtime 0, as Go writes it (GNU tar
//!   would put its process id there); the main header keeps an ASCII-only, truncated name;
//! - the archive ends with two zero blocks and nothing else (no padding to a record size).
//!
//! A test in `rules/tests/oci.rs` builds the same entries with Go's `archive/tar` and
//! compares the bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// The kind of a tar entry, with its type flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Dir => b'5',
            Kind::Symlink => b'2',
        }
    }
}

/// One header; `name` is relative (no leading `/`); directories get their trailing `/` here.
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub link: &'a str,
}

/// Writes tar entries to `W`; call [`TarWriter::finish`] to write the end blocks.
pub(crate) struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out }
    }

    /// Writes the header of an entry; a file's `size` bytes must follow through
    /// [`TarWriter::write_data`].
    pub fn write_header(&mut self, header: &Header) -> io::Result<()> {
        let name = full_name(header);
        let records = pax_records(header, &name);
        if needs_pax(&records, &name) {
            self.write_pax(&name, &encode_records(&records))?;
            return self.out.write_all(&v7_block(header, &to_ascii(&name), ""));
        }
        let (prefix, short) = split_name(&name).unwrap_or(("", &name));
        self.out.write_all(&v7_block(header, short, prefix))
    }

    /// Copies exactly `size` bytes of an entry's content and pads it to a block.
    pub fn write_data(&mut self, data: &mut dyn io::Read, size: u64) -> io::Result<()> {
        let copied = io::copy(&mut Read::take(data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {size} bytes, read {copied} (did the file change?)"),
            ));
        }
        self.pad(size)
    }

    /// Writes a whole entry whose content is in memory.
    pub fn write_bytes(&mut self, header: &Header, bytes: &[u8]) -> io::Result<()> {
        let header = Header {
            size: bytes.len() as u64,
            ..header.clone()
        };
        self.write_header(&header)?;
        self.write_data(&mut &bytes[..], header.size)
    }

    /// Writes the two end blocks and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (size % BLOCK as u64) as usize;
        if rest != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rest])?;
        }
        Ok(())
    }

    fn write_pax(&mut self, name: &str, records: &[u8]) -> io::Result<()> {
        let pax_name = pax_header_name(name);
        let pax = Header {
            name: &pax_name,
            kind: Kind::File,
            mode: 0,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            link: "",
        };
        let mut block = v7_block(&pax, &pax_name, "");
        block[156] = b'x';
        block[329..345].fill(0);
        set_checksum(&mut block);
        self.out.write_all(&block)?;
        self.out.write_all(records)?;
        self.pad(records.len() as u64)
    }
}

/// `<dir>/PaxHeaders.0/<file>` of an entry name, ASCII only, at most 100 bytes.
fn pax_header_name(name: &str) -> String {
    let (dir, file) = name.rsplit_once('/').map_or(("", name), |(d, f)| (d, f));
    let joined = [dir, "PaxHeaders.0", file]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let ascii = to_ascii(&joined);
    ascii[..ascii.len().min(100)]
        .trim_end_matches('/')
        .to_owned()
}

fn full_name(header: &Header) -> String {
    match header.kind {
        Kind::Dir => format!("{}/", header.name),
        _ => header.name.to_owned(),
    }
}

/// The PAX records an entry would need if written as PAX, as Go collects them.
fn pax_records(header: &Header, name: &str) -> BTreeMap<&'static str, String> {
    let mut records = BTreeMap::new();
    if !name.is_ascii() || name.len() > 100 {
        records.insert("path", name.to_owned());
    }
    if !header.link.is_ascii() || header.link.len() > 100 {
        records.insert("linkpath", header.link.to_owned());
    }
    for (key, value, digits) in [
        ("uid", u64::from(header.uid), 7),
        ("gid", u64::from(header.gid), 7),
        ("size", header.size, 11),
        ("mtime", header.mtime, 11),
    ] {
        if !fits(value, digits) {
            records.insert(key, value.to_string());
        }
    }
    records
}

/// Whether USTAR cannot hold the entry: any record but a `path` that USTAR can split.
fn needs_pax(records: &BTreeMap<&'static str, String>, name: &str) -> bool {
    records
        .keys()
        .any(|&key| key != "path" || split_name(name).is_none())
}

fn encode_records(records: &BTreeMap<&'static str, String>) -> Vec<u8> {
    records
        .iter()
        .flat_map(|(key, value)| pax_record(key, value).into_bytes())
        .collect()
}

/// `"<len> <key>=<value>\n"` where `<len>` counts the whole record, itself included.
fn pax_record(key: &str, value: &str) -> String {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

/// Splits a name into USTAR's (prefix, name) fields as Go's `splitUSTARPath` does: at the
/// last `/` within the first 156 bytes. `None` when USTAR cannot hold the name.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if !name.is_ascii() {
        return None;
    }
    if name.len() <= 100 {
        return Some(("", name));
    }
    let mut length = name.len();
    if length > 156 {
        length = 156;
    } else if name.ends_with('/') {
        length -= 1;
    }
    let at = name[..length].rfind('/')?;
    let (prefix, suffix) = (&name[..at], &name[at + 1..]);
    let fits = at > 0 && !suffix.is_empty() && suffix.len() <= 100 && prefix.len() <= 155;
    fits.then_some((prefix, suffix))
}

/// A header block with `name` (cut to 100 bytes) and `prefix` in their fields.
fn v7_block(header: &Header, name: &str, prefix: &str) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    put_str(&mut block[0..100], name);
    put_octal(&mut block[100..108], u64::from(header.mode & 0o7777));
    put_octal(&mut block[108..116], clamp(u64::from(header.uid), 7));
    put_octal(&mut block[116..124], clamp(u64::from(header.gid), 7));
    put_octal(&mut block[124..136], clamp(header.size, 11));
    put_octal(&mut block[136..148], clamp(header.mtime, 11));
    block[156] = header.kind.flag();
    put_str(&mut block[157..257], &to_ascii(header.link));
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    put_octal(&mut block[329..337], 0);
    put_octal(&mut block[337..345], 0);
    put_str(&mut block[345..500], prefix);
    set_checksum(&mut block);
    block
}

fn set_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

fn fits(value: u64, digits: u32) -> bool {
    value < 8u64.pow(digits)
}

fn clamp(value: u64, digits: u32) -> u64 {
    if fits(value, digits) {
        value
    } else {
        0
    }
}

fn put_octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

/// Copies `value` into a field, cut to its length; a cut that would leave a trailing `/`
/// ends at the last non-slash byte instead (as Go does, for readers that would take the
/// entry for a directory).
fn put_str(field: &mut [u8], value: &str) {
    let bytes = value.as_bytes();
    let len = bytes.len().min(field.len());
    field[..len].copy_from_slice(&bytes[..len]);
    if bytes.len() > field.len() && field[field.len() - 1] == b'/' {
        let kept = value[..field.len() - 1].trim_end_matches('/').len();
        field[kept] = 0;
    }
}

/// `s` without its non-ASCII characters and NULs, as Go's `toASCII`.
fn to_ascii(s: &str) -> String {
    s.chars().filter(|&c| c.is_ascii() && c != '\0').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Header<'_> {
        Header {
            name,
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: "",
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", "abc"), "12 path=abc\n");
        let long = "x".repeat(95);
        let record = pax_record("path", &long);
        assert_eq!(record.len().to_string(), record.split(' ').next().unwrap());
    }

    #[test]
    fn long_names_split_into_prefix_or_use_pax() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        assert_eq!(split_name(&long).unwrap().1, "f".repeat(50));
        assert_eq!(pax_header_name("a/b"), "a/PaxHeaders.0/b");
        assert_eq!(pax_header_name("a/b/"), "a/b/PaxHeaders.0");
        assert!(!needs_pax(&pax_records(&file(&long), &long), &long));
        let unsplittable = "f".repeat(150);
        let records = pax_records(&file(&unsplittable), &unsplittable);
        assert!(needs_pax(&records, &unsplittable));
        let encoded = String::from_utf8(encode_records(&records)).unwrap();
        assert!(encoded.contains(" path=fff"));
    }

    #[test]
    fn checksum_matches_definition() {
        let block = v7_block(&file("a"), "a", "");
        let mut blank = block;
        blank[148..156].copy_from_slice(b"        ");
        let sum: u64 = blank.iter().map(|&b| u64::from(b)).sum();
        let stored = std::str::from_utf8(&block[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(stored, 8).unwrap(), sum);
    }
}
