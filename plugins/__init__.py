"""The built-in kdbench plugins: each module is a plugin, loaded like a third-party one."""
