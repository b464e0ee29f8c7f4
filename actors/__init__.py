"""Ray actors: thin wrappers that give Breakwater's plain classes an address.

Only this package and `jobs/` import Ray. `factory` holds every actor option in one place;
`handles` is where the rest of the program makes its Ray calls.
"""
