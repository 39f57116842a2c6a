"""Posts made from email, their attachments and the attachments' signed download URLs."""
