//! Tokens of the xl.cfg syntax, with their positions.
//!
//! Follows xl's own scanner (libxlu_cfg_l.l) where it matters for what a
//! file means: strings in single or double quotes with the same backslash
//! escapes, no newline inside a string, `#` comments, `=` and `+=`,
//! newline and `;` as separators. Where xl would print "lexical error" we
//! keep going far enough to say something useful: a bare word is one token
//! (so `kernel = /boot/vmlinuz` can be told "strings must be quoted") and a
//! number with a unit (`512M`) is named as such.

use super::error::{show, DResult, Diag, Pos};

/// A string literal after unescaping, with the source position of every
/// byte so that problems inside a disk or vif specification can be pointed
/// at exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StrLit {
    pub text: String,
    /// Position of the opening quote.
    pub pos: Pos,
    /// `byte_pos[i]` is where byte `i` of `text` came from (for an escape,
    /// its backslash).
    byte_pos: Vec<Pos>,
    /// Position of the closing quote, used for "the end of the string".
    end: Pos,
}

impl StrLit {
    /// The source position of byte `offset` of the text; the closing quote
    /// for the end of the text.
    pub fn pos_at(&self, offset: usize) -> Pos {
        self.byte_pos.get(offset).copied().unwrap_or(self.end)
    }

    /// `self` followed by `other`, as `+=` does; positions are kept, so an
    /// error in the appended part points into the appended text.
    pub fn concat(mut self, other: StrLit) -> StrLit {
        self.text.push_str(&other.text);
        self.byte_pos.extend_from_slice(&other.byte_pos);
        self.end = other.end;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A bare word: a key, or a mistake such as an unquoted string.
    Word(String),
    Int(u64),
    Str(StrLit),
    Assign,
    AddAssign,
    Semi,
    Newline,
    LBracket,
    RBracket,
    Comma,
    Eof,
}

impl Tok {
    /// How the token is named in messages ("found ...").
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Int(n) => format!("the number {n}"),
            Tok::Str(_) => "a string".into(),
            Tok::Assign => "'='".into(),
            Tok::AddAssign => "'+='".into(),
            Tok::Semi => "';'".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Comma => "','".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

pub(crate) struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    at: usize,
    line: u32,
    col: u32,
    src: u32,
}

/// Characters that end a bare word because they mean something on their own.
fn is_punct(c: char) -> bool {
    matches!(c, '=' | '[' | ']' | ',' | ';' | '#' | '\'' | '"')
}

impl<'a> Lexer<'a> {
    /// A lexer over `text`, whose first line is numbered `first_line` (the
    /// command-line overrides share one line numbering).
    pub fn new(text: &'a str, src: u32, first_line: u32) -> Lexer<'a> {
        // A UTF-8 byte order mark is an editor artefact, not content.
        let at = if text.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
        Lexer {
            text,
            at,
            line: first_line,
            col: 1,
            src,
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            src: self.src,
            line: self.line,
            col: self.col,
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.text[self.at..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// The next token; at the end of the text, `Eof` (repeatedly).
    pub fn next_token(&mut self) -> DResult<Token> {
        loop {
            let pos = self.pos();
            let Some(c) = self.peek() else {
                return Ok(Token { tok: Tok::Eof, pos });
            };
            let single = |tok| Ok(Token { tok, pos });
            match c {
                ' ' | '\t' | '\r' => {
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                '\n' => {
                    self.bump();
                    return single(Tok::Newline);
                }
                '=' | '[' | ']' | ',' | ';' => {
                    self.bump();
                    return single(match c {
                        '=' => Tok::Assign,
                        '[' => Tok::LBracket,
                        ']' => Tok::RBracket,
                        ',' => Tok::Comma,
                        _ => Tok::Semi,
                    });
                }
                '+' if self.peek2() == Some('=') => {
                    self.bump();
                    self.bump();
                    return single(Tok::AddAssign);
                }
                '\'' | '"' => return self.string(),
                c if c.is_control() => {
                    return Err(Diag::new(
                        pos,
                        format!("unexpected control character U+{:04X}", c as u32),
                    ));
                }
                _ => return self.word(),
            }
        }
    }

    /// A run of characters up to whitespace or punctuation: an identifier,
    /// a number, or a stray word that the parser will complain about.
    fn word(&mut self) -> DResult<Token> {
        let pos = self.pos();
        let start = self.at;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c.is_control() || is_punct(c) {
                break;
            }
            if c == '+' && self.peek2() == Some('=') {
                break;
            }
            self.bump();
        }
        let word = &self.text[start..self.at];
        let tok = if word.starts_with(|c: char| c.is_ascii_digit()) {
            Tok::Int(parse_number(word).map_err(|msg| Diag::new(pos, msg))?)
        } else {
            Tok::Word(word.to_owned())
        };
        Ok(Token { tok, pos })
    }

    fn string(&mut self) -> DResult<Token> {
        let open = self.pos();
        let quote = self.bump().expect("called on a quote");
        let unterminated = || {
            Diag::new(
                open,
                format!("unterminated string: the closing {quote} is missing on this line"),
            )
        };
        let mut text = String::new();
        let mut byte_pos = Vec::new();
        loop {
            let here = self.pos();
            let c = match self.peek() {
                None | Some('\n') | Some('\r') => return Err(unterminated()),
                Some('\0') => {
                    return Err(Diag::new(here, "a string cannot contain a NUL character"));
                }
                Some(c) if c == quote => {
                    self.bump();
                    let end = here;
                    return Ok(Token {
                        tok: Tok::Str(StrLit {
                            text,
                            pos: open,
                            byte_pos,
                            end,
                        }),
                        pos: open,
                    });
                }
                Some('\\') => {
                    self.bump();
                    self.escape(here)
                        .map_err(|e| e.unwrap_or_else(unterminated))?
                }
                Some(c) => {
                    self.bump();
                    c
                }
            };
            text.push(c);
            byte_pos.extend(std::iter::repeat_n(here, c.len_utf8()));
        }
    }

    /// The character a backslash escape stands for; `Err(None)` if the line
    /// or text ends inside it (an unterminated string).
    fn escape(&mut self, backslash: Pos) -> Result<char, Option<Diag>> {
        let c = match self.peek() {
            None | Some('\n') | Some('\r') => return Err(None),
            Some(c) => c,
        };
        self.bump();
        let value: u32 = match c {
            '"' | '\'' | '\\' => return Ok(c),
            'a' => 0x07,
            'b' => 0x08,
            'f' => 0x0c,
            'n' => 0x0a,
            'r' => 0x0d,
            't' => 0x09,
            'v' => 0x0b,
            'x' => {
                let mut v = 0;
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(16)) {
                        Some(d) => {
                            self.bump();
                            v = v * 16 + d;
                        }
                        None => {
                            return Err(Some(Diag::new(
                                backslash,
                                "the escape \\x must be followed by two hexadecimal digits",
                            )));
                        }
                    }
                }
                v
            }
            '0'..='7' => {
                // Up to three octal digits, as in C. (xl's code converts
                // these digits in base 10, a bug; octal is what its escape
                // syntax and every C reader expect.)
                let mut v = c.to_digit(8).expect("octal digit");
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            self.bump();
                            v = v * 8 + d;
                        }
                        None => break,
                    }
                }
                v
            }
            other => {
                return Err(Some(Diag::new(
                    backslash,
                    format!(
                        "unknown escape {} in a string (write '\\\\' for a backslash)",
                        show(&format!("\\{other}"))
                    ),
                )));
            }
        };
        // Every value ends up in a path, a name or the guest command line,
        // all NUL-terminated on the way; and a lone byte above 0x7f would not
        // be UTF-8 (xl passes raw bytes, we keep text as text).
        match value {
            0 => Err(Some(Diag::new(backslash, "this escape stands for a NUL character, which a string cannot contain"))),
            1..=0x7f => Ok(char::from_u32(value).expect("ASCII")),
            _ => Err(Some(Diag::new(
                backslash,
                format!(
                    "this escape stands for byte 0x{value:x}, which is not ASCII; write the character itself instead"
                ),
            ))),
        }
    }
}

/// A number as xl.cfg writes them: decimal or `0x` hexadecimal.
///
/// xl also reads a leading `0` as octal (`010` is 8), which surprises
/// people writing `memory = 0512`; such numbers are refused rather than
/// read differently from xl.
fn parse_number(word: &str) -> Result<u64, String> {
    let too_large = || format!("the number {word} is too large");
    if let Some(hex) = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return u64::from_str_radix(hex, 16).map_err(|_| too_large());
        }
    } else if word.chars().all(|c| c.is_ascii_digit()) {
        if word.len() > 1 && word.starts_with('0') {
            return Err(format!(
                "the number {word} has a leading zero, which xl reads as octal; write it without the leading zero (or as 0x hexadecimal)"
            ));
        }
        return word.parse().map_err(|_| too_large());
    }
    Err(format!(
        "'{word}' is not a number: numbers are plain decimal or 0x hexadecimal, without a unit"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        let mut lx = Lexer::new(text, 0, 1);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token().unwrap();
            if t.tok == Tok::Eof {
                return out;
            }
            out.push(t.tok);
        }
    }

    fn err(text: &str) -> (u32, u32, String) {
        let mut lx = Lexer::new(text, 0, 1);
        loop {
            match lx.next_token() {
                Ok(t) if t.tok == Tok::Eof => panic!("no error in {text:?}"),
                Ok(_) => {}
                Err(d) => return (d.pos.line, d.pos.col, d.msg),
            }
        }
    }

    fn s(tok: &Tok) -> &str {
        match tok {
            Tok::Str(l) => &l.text,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn punctuation_words_numbers() {
        assert_eq!(
            toks("a=1;b += [0x1f, 2,]\n# c\n"),
            vec![
                Tok::Word("a".into()),
                Tok::Assign,
                Tok::Int(1),
                Tok::Semi,
                Tok::Word("b".into()),
                Tok::AddAssign,
                Tok::LBracket,
                Tok::Int(31),
                Tok::Comma,
                Tok::Int(2),
                Tok::Comma,
                Tok::RBracket,
                Tok::Newline,
                Tok::Newline,
            ]
        );
    }

    #[test]
    fn escapes() {
        let t = toks(r#""a\"b\'c\\d\n\t\x41\101\7" 'x\'y'"#);
        assert_eq!(s(&t[0]), "a\"b'c\\d\n\tAA\x07");
        assert_eq!(s(&t[1]), "x'y");
    }

    #[test]
    fn byte_positions_follow_escapes() {
        let t = toks(r#"  "a\x41é""#);
        let Tok::Str(lit) = &t[0] else { panic!() };
        assert_eq!(lit.pos.col, 3);
        assert_eq!(lit.pos_at(0).col, 4);
        assert_eq!(lit.pos_at(1).col, 5); // the backslash
        assert_eq!(lit.pos_at(2).col, 9); // é, two bytes
        assert_eq!(lit.pos_at(3).col, 9);
        assert_eq!(lit.pos_at(4).col, 10); // closing quote
    }

    #[test]
    fn lexical_errors() {
        assert_eq!(err("x = \"abc\n").0, 1);
        assert_eq!(err("x = \"abc\n").1, 5);
        assert!(err("x = 'abc").2.contains("closing '"));
        assert_eq!(
            err(r#"x = "a\qb""#),
            (
                1,
                7,
                "unknown escape '\\q' in a string (write '\\\\' for a backslash)".into()
            )
        );
        assert_eq!(err(r#"x = "\xZZ""#).1, 6);
        assert!(err(r#"x = "\x00""#).2.contains("NUL"));
        assert!(err(r#"x = "\x80""#).2.contains("not ASCII"));
        assert!(err("m = 512M").2.contains("without a unit"));
        assert!(err("m = 0512").2.contains("leading zero"));
        assert!(err("m = 99999999999999999999").2.contains("too large"));
        assert_eq!(err("a = \u{7}").1, 5);
    }

    #[test]
    fn crlf_and_bom() {
        assert_eq!(
            toks("\u{feff}a = 1\r\n"),
            vec![
                Tok::Word("a".into()),
                Tok::Assign,
                Tok::Int(1),
                Tok::Newline
            ]
        );
    }
}
