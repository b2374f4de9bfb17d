//! API keys: what a key may do.

wire_enum!(
    /// `admin | deployer | invoker`: the whole cluster; one tenant's
    /// management and traffic; one tenant's traffic only.
    KeyRole, "key role", KeyRole { Admin => "admin", Deployer => "deployer", Invoker => "invoker" }
);

impl KeyRole {
    /// The role a message names, or the one its older `admin` flag meant
    /// when it names none (messages from before roles).
    pub fn from_wire(role: i32, admin: bool) -> Result<Self, crate::FieldError> {
        match role {
            0 if admin => Ok(KeyRole::Admin),
            0 => Ok(KeyRole::Invoker),
            n => KeyRole::try_from(n)
                .map_err(|()| crate::FieldError::new("role", format!("unknown role {n}"))),
        }
    }

    /// Whether the key may manage its tenant (apps, builds, keys, events).
    pub fn manages(self) -> bool {
        self != KeyRole::Invoker
    }
}

#[cfg(test)]
mod tests {
    use super::KeyRole;

    #[test]
    fn a_message_without_a_role_keeps_what_its_admin_flag_meant() {
        assert_eq!(KeyRole::from_wire(0, true).unwrap(), KeyRole::Admin);
        assert_eq!(KeyRole::from_wire(0, false).unwrap(), KeyRole::Invoker);
        assert_eq!(KeyRole::from_wire(2, true).unwrap(), KeyRole::Deployer);
        assert!(KeyRole::from_wire(99, false).is_err());
        assert_eq!("deployer".parse::<KeyRole>().unwrap(), KeyRole::Deployer);
    }
}
