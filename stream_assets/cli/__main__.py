from stream_assets.cli import main

main()
