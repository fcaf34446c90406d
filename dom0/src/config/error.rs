//! Errors, and the source positions they point at.

use thiserror::Error;

/// A position in one of the texts a configuration was read from.
///
/// `src` indexes the table of sources kept by [`super::Settings`] (the file,
/// then one entry per command-line override), so that a position stays small
/// and `Copy` while still knowing which file it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub src: u32,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters (a tab is one column).
    pub col: u32,
}

/// An error before it is given a file name: the lexer, parser and validators
/// only know positions; [`super::Settings`] turns them into [`ConfigError`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Diag {
    pub pos: Pos,
    pub msg: String,
}

impl Diag {
    pub fn new(pos: Pos, msg: impl Into<String>) -> Diag {
        Diag {
            pos,
            msg: msg.into(),
        }
    }
}

/// Shorthand for the internal result type.
pub(crate) type DResult<T> = Result<T, Diag>;

/// A domain configuration that cannot be used, with where the problem is.
///
/// Displays as `FILE:LINE:COLUMN: message`, the form editors and terminals
/// turn into links. Settings given on the command line report the pseudo
/// file `<command line>`, where line N is the N-th override. The only error
/// without a position is a file that cannot be read at all; it displays as
/// `FILE: message` and has `line == 0` and `column == 0`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{}{message}", location(.file, *.line, *.column))]
pub struct ConfigError {
    /// The file name as given (or `<command line>`).
    pub file: String,
    /// 1-based line, or 0 when the error concerns the whole file.
    pub line: u32,
    /// 1-based column in characters, or 0 when the error concerns the whole
    /// file.
    pub column: u32,
    /// One sentence, without the position.
    pub message: String,
}

fn location(file: &str, line: u32, column: u32) -> String {
    if line == 0 {
        format!("{file}: ")
    } else {
        format!("{file}:{line}:{column}: ")
    }
}

impl ConfigError {
    /// An error about a file as a whole (it could not be read).
    pub(crate) fn whole_file(file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

/// User text quoted for a message: in single quotes, control characters
/// escaped (a configuration file must not be able to drive the terminal
/// that shows its errors), and cut after 40 characters.
pub(crate) fn show(s: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::from("'");
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_is_tame() {
        assert_eq!(show("abc"), "'abc'");
        assert_eq!(show("a\u{1b}[2Jb\t"), "'a\\u{1b}[2Jb\\t'");
        assert_eq!(show(&"x".repeat(50)), format!("'{}…'", "x".repeat(40)));
    }
}
