"""The sysfs tree: attribute tables with their show/store functions, and the kernfs rules."""
