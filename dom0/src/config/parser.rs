//! The grammar of xl.cfg: `KEY = VALUE` or `KEY += VALUE` settings ended by
//! a newline, a `;` or the end of the text; a value is a string, a number
//! or a list of values in `[ ]` that may span lines and end with a comma.

use super::error::{DResult, Diag, Pos};
use super::lexer::{Lexer, StrLit, Tok, Token};

/// How deep lists may nest. xl allows nesting; no key we accept uses it, and
/// a bound keeps hostile input from exhausting the stack.
const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Str(StrLit),
    Int { value: u64, pos: Pos },
    List { items: Vec<Value>, pos: Pos },
}

impl Value {
    pub fn pos(&self) -> Pos {
        match self {
            Value::Str(s) => s.pos,
            Value::Int { pos, .. } | Value::List { pos, .. } => *pos,
        }
    }

    /// "a string", "a number", "a list": for type errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int { .. } => "a number",
            Value::List { .. } => "a list",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `=`
    Set,
    /// `+=`: append to a string or a list set earlier.
    Add,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawSetting {
    pub key: String,
    pub key_pos: Pos,
    pub op: Op,
    pub op_pos: Pos,
    pub value: Value,
}

/// Parses one text into its settings, in order.
pub(crate) fn parse(text: &str, src: u32, first_line: u32) -> DResult<Vec<RawSetting>> {
    let mut lexer = Lexer::new(text, src, first_line);
    let cur = lexer.next_token()?;
    let mut p = Parser { lexer, cur };
    let mut out = Vec::new();
    loop {
        match p.cur.tok {
            Tok::Eof => return Ok(out),
            Tok::Newline => p.advance()?,
            _ => out.push(p.setting()?),
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    cur: Token,
}

/// Whether a bare word can be a key. Only our keys are accepted later, but
/// anything shaped like one (`on-reboot`, `Memory`) gets the "unknown key,
/// did you mean" treatment rather than a syntax error.
fn key_like(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Parser<'_> {
    fn advance(&mut self) -> DResult<()> {
        self.cur = self.lexer.next_token()?;
        Ok(())
    }

    fn setting(&mut self) -> DResult<RawSetting> {
        let key_pos = self.cur.pos;
        let key = match &self.cur.tok {
            Tok::Word(w) if key_like(w) => w.clone(),
            Tok::Semi => {
                return Err(Diag::new(
                    key_pos,
                    "unexpected ';' with no setting before it",
                ));
            }
            other => {
                return Err(Diag::new(
                    key_pos,
                    format!(
                        "expected a setting (KEY = VALUE), found {}",
                        other.describe()
                    ),
                ));
            }
        };
        self.advance()?;
        let op_pos = self.cur.pos;
        let op = match self.cur.tok {
            Tok::Assign => Op::Set,
            Tok::AddAssign => Op::Add,
            ref other => {
                return Err(Diag::new(
                    op_pos,
                    format!("expected '=' after '{key}', found {}", other.describe()),
                ));
            }
        };
        self.advance()?;
        let value = self.value(&key, 0)?;
        match self.cur.tok {
            Tok::Semi | Tok::Newline => self.advance()?,
            Tok::Eof => {}
            ref other => {
                return Err(Diag::new(
                    self.cur.pos,
                    format!(
                        "expected ';' or the end of the line after the value of '{key}', found {}",
                        other.describe()
                    ),
                ));
            }
        }
        Ok(RawSetting {
            key,
            key_pos,
            op,
            op_pos,
            value,
        })
    }

    /// A value; `self.cur` is its first token. Leaves `self.cur` on the
    /// token after it.
    fn value(&mut self, key: &str, depth: usize) -> DResult<Value> {
        let pos = self.cur.pos;
        let value = match &self.cur.tok {
            Tok::Str(s) => Value::Str(s.clone()),
            Tok::Int(n) => Value::Int { value: *n, pos },
            Tok::LBracket => return self.list(key, depth),
            Tok::Word(w) => {
                let hint = if w.starts_with('-') && w[1..].starts_with(|c: char| c.is_ascii_digit())
                {
                    "; negative numbers are not allowed".to_owned()
                } else {
                    format!("; strings must be quoted, as in {key} = \"{w}\"")
                };
                return Err(Diag::new(
                    pos,
                    format!(
                        "expected a value (a quoted string, a number or a list), found '{w}'{hint}"
                    ),
                ));
            }
            other => {
                return Err(Diag::new(
                    pos,
                    format!(
                        "expected a value (a quoted string, a number or a list), found {}",
                        other.describe()
                    ),
                ));
            }
        };
        self.advance()?;
        Ok(value)
    }

    fn list(&mut self, key: &str, depth: usize) -> DResult<Value> {
        let open = self.cur.pos;
        if depth >= MAX_DEPTH {
            return Err(Diag::new(
                open,
                format!("lists are nested more than {MAX_DEPTH} deep"),
            ));
        }
        let unterminated = || Diag::new(open, "unterminated list: this '[' is never closed");
        let opened_at = format!("the list opened at line {}, column {}", open.line, open.col);
        self.advance()?;
        let mut items = Vec::new();
        loop {
            self.skip_newlines()?;
            match self.cur.tok {
                Tok::RBracket => break,
                Tok::Eof => return Err(unterminated()),
                Tok::Str(_) | Tok::Int(_) | Tok::LBracket => {
                    items.push(self.value(key, depth + 1)?);
                }
                Tok::Comma => {
                    return Err(Diag::new(
                        self.cur.pos,
                        format!("unexpected ',' in {opened_at}: an item is missing"),
                    ));
                }
                ref other => {
                    return Err(Diag::new(
                        self.cur.pos,
                        format!(
                            "expected a list item (a quoted string or a number) or ']' in {opened_at}, found {}",
                            other.describe()
                        ),
                    ));
                }
            }
            self.skip_newlines()?;
            match self.cur.tok {
                Tok::Comma => self.advance()?,
                Tok::RBracket => break,
                Tok::Eof => return Err(unterminated()),
                ref other => {
                    return Err(Diag::new(
                        self.cur.pos,
                        format!(
                            "expected ',' or ']' in {opened_at}, found {}",
                            other.describe()
                        ),
                    ));
                }
            }
        }
        self.advance()?;
        Ok(Value::List { items, pos: open })
    }

    fn skip_newlines(&mut self) -> DResult<()> {
        while self.cur.tok == Tok::Newline {
            self.advance()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (u32, u32, String) {
        let d = parse(text, 0, 1).unwrap_err();
        (d.pos.line, d.pos.col, d.msg)
    }

    #[test]
    fn settings_and_lists() {
        let s = parse(
            "a = 'x'; b = 2\nc = [\n  'p',\n  'q', # comment\n]\nd += []",
            0,
            1,
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[1].key, "b");
        assert_eq!(
            s[1].value,
            Value::Int {
                value: 2,
                pos: Pos {
                    src: 0,
                    line: 1,
                    col: 14
                }
            }
        );
        let Value::List { items, pos } = &s[2].value else {
            panic!()
        };
        assert_eq!((pos.line, pos.col), (2, 5));
        assert_eq!(items.len(), 2);
        assert_eq!(s[3].op, Op::Add);
        assert_eq!((s[3].key_pos.line, s[3].key_pos.col), (6, 1));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("a = [ 'x',\n 'y'\n").0, 1);
        assert_eq!(err("a = [ 'x',\n 'y'\n").1, 5);
        assert_eq!(err("a = [ , ]").1, 7);
        assert_eq!(err("a = ['x' 'y']").1, 10);
        assert_eq!(err("a 1").1, 3);
        assert_eq!(err("a = 1 b = 2").1, 7);
        assert!(err("kernel = /boot/vmlinuz")
            .2
            .contains("kernel = \"/boot/vmlinuz\""));
        assert!(err("vcpus = -1").2.contains("negative"));
        assert_eq!(err(";").1, 1);
        assert_eq!(err("a =\n1").1, 4);
        let deep = format!("a = {}{}", "[".repeat(40), "]".repeat(40));
        assert!(err(&deep).2.contains("nested"));
    }
}
