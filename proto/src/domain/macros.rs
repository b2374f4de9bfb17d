//! `wire_enum!`: a closed enum mapped once to its proto enum and once to
//! the lowercase string stored in the database.

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $pb:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name, as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::domain::UnknownState { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl From<$name> for $crate::pb::$pb {
            fn from(state: $name) -> Self {
                match state { $($name::$variant => $crate::pb::$pb::$variant),+ }
            }
        }

        impl From<$name> for i32 {
            fn from(state: $name) -> Self {
                $crate::pb::$pb::from(state) as i32
            }
        }

        impl TryFrom<$crate::pb::$pb> for $name {
            type Error = ();
            fn try_from(state: $crate::pb::$pb) -> Result<Self, ()> {
                match state {
                    $($crate::pb::$pb::$variant => Ok($name::$variant),)+
                    _ => Err(()),
                }
            }
        }

        impl TryFrom<i32> for $name {
            type Error = ();
            /// Unspecified (0) and numbers outside the contract are errors.
            fn try_from(value: i32) -> Result<Self, ()> {
                $crate::pb::$pb::try_from(value).map_err(|_| ()).and_then($name::try_from)
            }
        }
    };
}
