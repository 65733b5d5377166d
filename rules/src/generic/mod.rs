//! Rules that know no language: [`genrule`] (a shell command over files, the rule that
//! proves the engine is not tied to Go) and [`filegroup`] (a named set of files).

pub mod filegroup;
pub mod genrule;
