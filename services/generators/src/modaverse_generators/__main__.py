from modaverse_generators.cli import main

main()
