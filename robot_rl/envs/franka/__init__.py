"""Franka Panda tasks: Reach, Push, Slide, PickAndPlace; the Cartesian controller; experts."""
