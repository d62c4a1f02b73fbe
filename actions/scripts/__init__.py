"""PowerShell templates of the remote operations, one ``<op>.ps1`` each (see actions.protocol)."""
