# op: file.read
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.path
    # .NET resolves relative paths against the process directory, not PowerShell's location.
    if (-not [IO.Path]::IsPathRooted($path)) {
        throw "not an absolute path: '$path'"
    }
    if (Test-Path -LiteralPath $path -PathType Leaf) {
        # ReadAllBytes keeps the BOM and the encoding exactly as they are on disk.
        $bytes = [IO.File]::ReadAllBytes($path)
        $sha = [Security.Cryptography.SHA256]::Create()
        $hash = [BitConverter]::ToString($sha.ComputeHash($bytes)).Replace('-', '').ToLowerInvariant()
        [ordered]@{
            ok          = $true
            exists      = $true
            content_b64 = [Convert]::ToBase64String($bytes)
            sha256      = $hash
        } | ConvertTo-Json -Compress
    }
    else {
        [ordered]@{
            ok          = $true
            exists      = $false
            content_b64 = ''
            sha256      = ''
        } | ConvertTo-Json -Compress
    }
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
