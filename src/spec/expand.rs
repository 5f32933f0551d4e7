//! `$(VAR)` references in `command`, `args` and `env` values, expanded as Kubernetes does
//! (its `third_party/forked/golang/expansion`): `$(NAME)` becomes NAME's value when NAME is
//! defined, and stays as written when it is not; `$$` is a literal `$`, so `$$(NAME)` stays
//! `$(NAME)`.

/// Expands the references in `input`, looking names up with `lookup`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                // No closing parenthesis: not a reference.
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<&'static str> {
        match name {
            "POD" => Some("web"),
            "EMPTY" => Some(""),
            _ => None,
        }
    }

    #[test]
    fn expands_like_kubernetes() {
        for (input, want) in [
            ("$(POD)", "web"),
            ("x-$(POD)-y", "x-web-y"),
            ("$(POD)$(POD)", "webweb"),
            ("$(EMPTY)", ""),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(POD)", "$(POD)"),
            ("$$$(POD)", "$web"),
            ("$POD", "$POD"),
            ("$(POD", "$(POD"),
            ("cost: $5", "cost: $5"),
            ("trailing $", "trailing $"),
            ("", ""),
        ] {
            assert_eq!(expand(input, env), want, "input {input:?}");
        }
    }
}
